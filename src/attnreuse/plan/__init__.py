"""Attention kinds as registered objects, and the one plan grammar that names them.

A plan is plain data: one kind for every layer ("share") or one kind per layer, as a sequence or a
comma-separated string ("mha,share,mha,share"). Each kind is a `Kind` registered under its name
(`register_kind`); hosts (`attnreuse.models.vit`, `attnreuse.hf`) dispatch through the registry, so adding a kind is one
file here plus its tests. The kinds shipped are the modules imported below; `kinds_summary()` lists
the registered ones as a user writes them.
"""

from attnreuse.plan.registry import (
    DENSE_WEIGHTS, Kind, LayerSpec, SourceAttention, VitBlockArgs, get_kind, keeps_enough, kind_names, kinds_summary,
    register_kind,
)
from attnreuse.plan.grammar import format_plan, map_sources, parse_entry, parse_plan
from attnreuse.plan import mha, reuse, share, skip, taylor, kvpool  # noqa: F401  (registers the kinds)

__all__ = [
    "DENSE_WEIGHTS",
    "Kind",
    "LayerSpec",
    "SourceAttention",
    "VitBlockArgs",
    "format_plan",
    "get_kind",
    "keeps_enough",
    "kind_names",
    "kinds_summary",
    "map_sources",
    "parse_entry",
    "parse_plan",
    "register_kind",
]
