"""Model families, registered with timm on import."""

from __future__ import annotations

import timm
from timm.models import model_entrypoint

from attnreuse.models import uniform, vit


def create_model(name: str, **kwargs):
    """`timm.create_model` with the attnreuse models registered (any timm name works too)."""
    return timm.create_model(name, **kwargs)


def list_models() -> list[str]:
    """Names of every model registered by an attnreuse module, sorted."""
    return sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("attnreuse."))


__all__ = ["create_model", "list_models", "uniform", "vit"]
