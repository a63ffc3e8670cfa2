"""The plan grammar: parsed once, here, for every host.

A plan is one kind for every layer ("reuse"), or one entry per layer given as a sequence or a
comma-separated string ("mha,share,mha,share"). An entry is `kind` or `kind:ARG` where the kind
takes an argument (`reuse:G`: G maps). A layer whose kind `needs_map` applies the map of the
closest earlier layer that `computes_map`; one that `needs_previous` cannot be first.
"""

from __future__ import annotations

from collections.abc import Sequence

from attnreuse.plan.registry import LayerSpec, get_kind

__all__ = ["format_plan", "map_sources", "parse_entry", "parse_plan"]


def _entries(plan: object, depth: int, owner: str, name: str, depth_name: str | None) -> list[str]:
    if isinstance(plan, str):
        entries = [e.strip() for e in plan.split(",")]
        if len(entries) == 1:
            return entries * depth
    elif isinstance(plan, Sequence) and not isinstance(plan, (bytes, bytearray)):
        entries = list(plan)
    else:
        raise TypeError(f"{name} must be a str or a sequence of str, got {type(plan).__name__}")
    if len(entries) != depth:
        layers = f"{depth_name}={depth}" if depth_name else f"{depth} layers"
        raise ValueError(f"{name} has {len(entries)} entries but {owner} has {layers}; give one kind or one per layer")
    return entries


def parse_plan(
    plan: object, depth: int, num_heads: int, owner: str = "the model", name: str = "plan",
    depth_name: str | None = None,
) -> tuple[LayerSpec, ...]:
    """Validate `plan` for `owner` with `depth` layers of `num_heads` heads -> one LayerSpec per layer.

    `name` / `depth_name`: what the host calls the plan and its layer count in its messages (the
    ViT: "attn_plan", "depth"; None: "N layers")."""
    specs = tuple(
        parse_entry(entry, num_heads, f"{name}[{i}]") for i, entry in enumerate(_entries(plan, depth, owner, name, depth_name))
    )
    map_sources(specs, name)
    return specs


def parse_entry(entry: object, num_heads: int, where: str = "plan entry") -> LayerSpec:
    """One entry ("reuse:2") -> LayerSpec, checked on its own (not where it sits in a plan)."""
    if not isinstance(entry, str):
        raise TypeError(f"{where} must be a str kind, got {type(entry).__name__} {entry!r}")
    where = f"{where}={entry!r}"
    kind_name, _, arg = entry.strip().lower().partition(":")
    try:
        kind = get_kind(kind_name)
    except ValueError as err:
        raise ValueError(f"{where} is not a known kind ({err})") from None
    return LayerSpec(kind_name, kind.parse_arg(arg, num_heads, where))


def map_sources(specs: Sequence[LayerSpec], name: str = "plan") -> tuple[int | None, ...]:
    """For each layer, the index of the layer whose map it applies (None for kinds that apply none)."""
    last_map, sources = None, []
    for i, spec in enumerate(specs):
        kind = get_kind(spec.kind)
        if kind.needs_previous and i == 0:
            raise ValueError(f"{name}[0]={str(spec)!r}: the first layer has no previous layer to read from")
        if kind.needs_map:
            if last_map is None:
                raise ValueError(f"{name}[{i}]={str(spec)!r} has no earlier layer computing a softmax map")
            sources.append(last_map)
        else:
            sources.append(None)
        if kind.computes_map:
            last_map = i
    return tuple(sources)


def format_plan(specs: Sequence[LayerSpec]) -> str:
    """Compact text: runs of one kind as 'kind xN', e.g. 'mha, share, mha x2'."""
    runs: list[list] = []
    for spec in specs:
        if runs and runs[-1][0] == str(spec):
            runs[-1][1] += 1
        else:
            runs.append([str(spec), 1])
    return ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in runs)
