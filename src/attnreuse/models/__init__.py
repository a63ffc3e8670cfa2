"""Model families, registered with timm on import."""

from __future__ import annotations

import timm


def create_model(name: str, **kwargs):
    """`timm.create_model` with the attnreuse models registered (any timm name works too)."""
    return timm.create_model(name, **kwargs)


__all__ = ["create_model"]
