"""Model families, registered with timm on import."""

from __future__ import annotations

import difflib

import timm
from timm.models import model_entrypoint

from attnreuse.models import uniform, vit


def check_model_name(name: object) -> str:
    """`name` if timm knows it (attnreuse's old names included), else a ValueError naming the
    closest registered names."""
    if isinstance(name, str) and timm.is_model(name):
        return name
    close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `timm.list_models()`"
    raise ValueError(f"unknown model {name!r}{hint}")


def create_model(name: str, **kwargs):
    """`timm.create_model` with the attnreuse models registered (any timm name works too); an
    unknown name is a ValueError (timm raises a RuntimeError)."""
    return timm.create_model(check_model_name(name), **kwargs)


def list_models() -> list[str]:
    """Names of every model registered by an attnreuse module, sorted."""
    return sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("attnreuse."))


__all__ = ["check_model_name", "create_model", "list_models", "uniform", "vit"]
