"""What several kinds share: copying a dense layer's projections into a core, running a map core."""

from __future__ import annotations

import torch
from torch import nn

from attnreuse.plan.registry import SourceAttention


def copy_projection(dst: nn.Linear, src: SourceAttention, name: str) -> None:
    """dst <- src's `name` projection ("query", "key" or "value"), weight and bias."""
    with torch.no_grad():
        dst.weight.copy_(src.weights[name])
        if dst.bias is not None:
            bias = src.biases[name]
            dst.bias.copy_(bias if bias is not None else torch.zeros_like(dst.bias))


def run_map_core(core: nn.Module, x, key_bias, emit_map: bool):
    """(output, map or None) of a `MapSelfAttention` core; the map is materialised only when a
    later layer applies it (`emit_map`)."""
    if emit_map:
        return core(x, key_bias, return_map=True)
    return core(x, key_bias), None
