"""`share`: attention map reuse across layers (Shim, Choi, Sung 2023): the layer applies the map
of the closest earlier layer that computes one and projects V only (its Q/K are dropped)."""

from __future__ import annotations

from attnreuse.layers.token_attention import SharedMapSelfAttention
from attnreuse.plan._copy import copy_projection, vit_attention
from attnreuse.plan._vit_retrofit import regress, share_inputs
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

    def vit_modules(self, spec, args):
        return {"norm1": args.norm_layer(args.dim), "attn": vit_attention(args, v_only=True)}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        return block.attn(block.norm1(x), attn_map=attn_map), None

    def vit_dense_weights(self, spec, num_heads):
        return "values"

    def vit_fit(self, r, layer):
        """The layer keeps its V/proj but now applies another layer's map: refit V and proj so that
        it reproduces its original attention output on the calibration images."""
        attn = r.target.blocks[layer].attn
        x_in, maps = share_inputs(r.target, layer, r.batches)
        params = [*attn.v.parameters(), *attn.proj.parameters()]
        fit = regress(attn, params, [x_in, maps], r.captures[layer].output, lambda m, x, a: m(x, attn_map=a), r.config)
        return [{"layer": layer, "kind": "share V/proj", **fit}]

register_kind(Share())
