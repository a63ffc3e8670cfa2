"""`share`: attention map reuse across layers (Shim, Choi, Sung 2023): the layer applies the map
of the closest earlier layer that computes one and projects V only (its Q/K are dropped)."""

from __future__ import annotations

from attnreuse.layers.token_attention import SharedMapSelfAttention
from attnreuse.plan._copy import copy_projection
from attnreuse.plan.registry import Kind, register_kind


class Share(Kind):
    name = "share"
    needs_map = True
    help = "applies the closest earlier layer's map; projects V only"

    def retrofit(self, spec, src):
        core = SharedMapSelfAttention(src.dim, src.num_heads, bias=src.biases["value"] is not None)
        copy_projection(core.value, src, "value")
        return core

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return core(x, attn_map), None

    def parameters_kept(self):
        return ("value",)


    def removed_parts(self, spec, num_heads):
        return {"qk_proj": 1.0, "scores_softmax": 1.0}  # keeps V, A.V and the output projection

register_kind(Share())
