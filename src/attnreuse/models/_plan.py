"""Per-layer attention plans for the attnreuse ViT: parsing and validation.

A plan is plain data: one kind for every layer ("mha") or a sequence with one kind per layer.
Kinds:
- "mha": multi-head attention;
- "reuse": Reuse Attention, one map for all heads; "reuse:G": grouped reuse with G maps
  (G must divide num_heads; "reuse:<num_heads>" is multi-head attention);
- "share": applies the map of the closest earlier layer that computed one ("mha"/"reuse"), projects V only;
- "skip": SkipAt, the attention output is Phi(previous layer's attention output);
- "taylor": ViTALiTy linear Taylor attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from attnreuse.plan.grammar import format_plan  # one formatter for every host

__all__ = ["KINDS", "LayerSpec", "format_plan", "map_sources", "parse_plan"]

KINDS = ("mha", "reuse", "share", "skip", "taylor")
MAP_KINDS = ("mha", "reuse")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a plan: its kind and, for "reuse", the number of query/key heads (maps)."""

    kind: str
    qk_heads: int | None = None

    def __str__(self) -> str:
        if self.kind == "reuse" and self.qk_heads != 1:
            return f"reuse:{self.qk_heads}"
        return self.kind


def _parse_kind(entry: object, index: int, num_heads: int) -> LayerSpec:
    if not isinstance(entry, str):
        raise TypeError(f"attn_plan[{index}] must be a str kind, got {type(entry).__name__} {entry!r}")
    kind, _, arg = entry.strip().lower().partition(":")
    if kind not in KINDS:
        raise ValueError(f"attn_plan[{index}]={entry!r} is not a known kind; use one of {KINDS} (or 'reuse:G')")
    if kind != "reuse":
        if arg:
            raise ValueError(f"attn_plan[{index}]={entry!r}: only 'reuse' takes an argument (reuse:G)")
        return LayerSpec(kind)
    if not arg:
        return LayerSpec("reuse", 1)
    if not arg.isdigit() or int(arg) < 1 or num_heads % int(arg):
        raise ValueError(
            f"attn_plan[{index}]={entry!r}: G in 'reuse:G' must be a positive divisor of num_heads={num_heads}"
        )
    return LayerSpec("reuse", int(arg))


def parse_plan(plan: object, depth: int, num_heads: int, owner: str = "the model") -> tuple[LayerSpec, ...]:
    """Validate `plan` (a kind, or one kind per layer) for `owner` (model or checkpoint) of `depth` blocks."""
    if isinstance(plan, str):
        plan = [plan] * depth
    elif isinstance(plan, Sequence) and not isinstance(plan, (bytes, bytearray)):
        plan = list(plan)
        if len(plan) != depth:
            raise ValueError(f"attn_plan has {len(plan)} entries but {owner} has depth={depth}; give one kind per layer")
    else:
        raise TypeError(f"attn_plan must be a str or a sequence of str, got {type(plan).__name__}")
    specs = tuple(_parse_kind(entry, i, num_heads) for i, entry in enumerate(plan))
    if specs and specs[0].kind in ("share", "skip"):
        raise ValueError(
            f"attn_plan[0]={specs[0].kind!r}: the first layer has no earlier layer to "
            f"{'share a map with' if specs[0].kind == 'share' else 'skip from'}; start with 'mha', 'reuse' or 'taylor'"
        )
    map_sources(specs)
    return specs


def map_sources(specs: Sequence[LayerSpec]) -> tuple[int | None, ...]:
    """For each layer, the index of the layer whose map a "share" layer applies (None otherwise)."""
    last_map, sources = None, []
    for i, spec in enumerate(specs):
        if spec.kind == "share":
            if last_map is None:
                raise ValueError(
                    f"attn_plan[{i}]='share' has no earlier layer computing a softmax map ('mha' or 'reuse')"
                )
            sources.append(last_map)
        else:
            sources.append(None)
            if spec.kind in MAP_KINDS:
                last_map = i
    return tuple(sources)
