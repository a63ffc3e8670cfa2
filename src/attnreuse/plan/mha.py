"""`mha`: exact multi-head softmax attention, every head its own map (the dense layer as it was)."""

from __future__ import annotations

from attnreuse.layers.token_attention import MapSelfAttention
from attnreuse.plan._copy import copy_projections, run_map_core, vit_attention, vit_map_attend
from attnreuse.plan._vit_retrofit import fold_qk, representative
from attnreuse.plan.registry import Kind, register_kind


class MultiHead(Kind):
    name = "mha"
    computes_map = True
    help = "multi-head attention, one map per head (exact, FLAT row-tiled or fused)"

    def retrofit(self, spec, src):
        core = MapSelfAttention(src.dim, src.num_heads, scale=src.scale, bias=src.biases["query"] is not None)
        return copy_projections(core, src)

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return run_map_core(core, x, key_bias, emit_map)

    def parameters_kept(self):
        return ("query", "key", "value")

    def vit_modules(self, spec, args):
        attn = vit_attention(args, qk_heads=args.num_heads, qk_norm=args.qk_norm, norm_layer=args.norm_layer)
        return {"norm1": args.norm_layer(args.dim), "attn": attn}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        return vit_map_attend(block, x)

    def vit_retrofit(self, r, layer):
        """A map later layers apply starts from the group member whose map is most representative
        (highest mean cosine with the other members' maps): its q/k rows move here, LayerNorm folded.
        Only members whose source layer kept its Q/K (not a "share" source) are compared and chosen."""
        members = r.members(layer)
        if len(members) == 1:
            return []
        candidates = [m for m in members if r.source_keeps(m) == "all"]  # `layer` itself is one (it needs "all")
        rep = candidates[representative([r.captures[m].maps.mean(1) for m in candidates])]
        if rep != layer:
            fold_qk(r.sd, r.source_sd, rep, layer, r.dim)
        return [{"layer": layer, "kind": "share group", "members": members, "map_from_layer": rep}]


register_kind(MultiHead())
