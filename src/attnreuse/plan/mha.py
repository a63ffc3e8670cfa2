"""`mha`: exact multi-head softmax attention, every head its own map (the dense layer as it was)."""

from __future__ import annotations

from attnreuse.layers.token_attention import MapSelfAttention
from attnreuse.plan._copy import copy_projection, run_map_core
from attnreuse.plan.registry import Kind, register_kind


class MultiHead(Kind):
    name = "mha"
    computes_map = True
    help = "multi-head attention, one map per head (exact, FLAT row-tiled or fused)"

    def retrofit(self, spec, src):
        core = MapSelfAttention(src.dim, src.num_heads, scale=src.scale, bias=src.biases["query"] is not None)
        for name in ("query", "key", "value"):
            copy_projection(getattr(core, name), src, name)
        return core

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return run_map_core(core, x, key_bias, emit_map)

    def parameters_kept(self):
        return ("query", "key", "value")


register_kind(MultiHead())
