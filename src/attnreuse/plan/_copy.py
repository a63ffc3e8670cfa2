"""What several kinds share: copying a dense layer's projections into a core, running a map core,
building and running the ViT's `attnreuse.layers.Attention`, and the hooks of a kind that keeps
the dense Q/K/V (`KeepsQKV`)."""

from __future__ import annotations

import torch
from torch import nn

from attnreuse.layers import Attention
from attnreuse.plan.registry import Kind, SourceAttention, VitBlockArgs


def copy_projection(dst: nn.Linear, src: SourceAttention, name: str) -> None:
    """dst <- src's `name` projection ("query", "key" or "value"), weight and bias."""
    with torch.no_grad():
        dst.weight.copy_(src.weights[name])
        if dst.bias is not None:
            bias = src.biases[name]
            dst.bias.copy_(bias if bias is not None else torch.zeros_like(dst.bias))


def copy_projections(core: nn.Module, src: SourceAttention, names: tuple[str, ...] = ("query", "key", "value")) -> nn.Module:
    """core's `names` projections (its attributes of those names) <- src's; returns core."""
    for name in names:
        copy_projection(getattr(core, name), src, name)
    return core


class KeepsQKV(Kind):
    """A kind whose core keeps the dense layer's query, key and value projections as they are
    and reads padding as a key mask: `core(x, key_mask)`, no map in or out (taylor, kvpool)."""

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return core(x, key_mask), None

    def parameters_kept(self):
        return ("query", "key", "value")


def run_map_core(core: nn.Module, x, key_bias, emit_map: bool):
    """(output, map or None) of a `MapSelfAttention` core; the map is materialised only when a
    later layer applies it (`emit_map`)."""
    if emit_map:
        return core(x, key_bias, return_map=True)
    return core(x, key_bias), None


def vit_attention(args: VitBlockArgs, **kwargs) -> Attention:
    """The ViT block's `Attention` (timm's names: `qkv` or `qk` + `v`, `proj`) with the block's
    bias and dropout settings; `kwargs`: the kind's own (qk_heads, qk_dim, v_only, qk_norm ...)."""
    return Attention(
        args.dim, args.num_heads, qkv_bias=args.qkv_bias, proj_bias=args.proj_bias, proj_drop=args.proj_drop,
        attn_drop=args.attn_drop, **kwargs,
    )


def vit_map_attend(block: nn.Module, x):
    """(output, map when a later layer applies it, else None) of a map-computing ViT block."""
    if block.emit_map:
        return block.attn(block.norm1(x), return_map=True)
    return block.attn(block.norm1(x)), None

