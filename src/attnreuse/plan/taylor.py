"""`taylor`: ViTALiTy (HPCA 2023) linear Taylor attention, keys centred over the real tokens;
keeps the dense layer's Q/K/V (the expansion approximates the same softmax)."""

from __future__ import annotations

from attnreuse.layers import TaylorAttention
from attnreuse.layers.token_attention import TaylorSelfAttention
from attnreuse.plan._copy import KeepsQKV, copy_projections
from attnreuse.plan.registry import register_kind


class Taylor(KeepsQKV):
    name = "taylor"
    help = "ViTALiTy linear Taylor attention, O(N d^2)"

    def retrofit(self, spec, src):
        core = TaylorSelfAttention(src.dim, src.num_heads, bias=src.biases["query"] is not None)
        core.scale = src.scale
        return copy_projections(core, src)

    def removed_parts(self, spec, num_heads):
        return {"scores_softmax": 1.0, "av": 1.0}  # its O(N d^2) core takes their place

    def vit_modules(self, spec, args):
        o = args.options
        attn = TaylorAttention(
            args.dim, args.num_heads, qk_norm=args.qk_norm, norm_layer=args.norm_layer, center=o["taylor_center"],
            use_sparse=o["taylor_sparse"], sparse_threshold=o["taylor_sparse_threshold"],
            sparse_mode=o["taylor_sparse_mode"], sparse_anneal=o["taylor_sparse_anneal"],
            qkv_bias=args.qkv_bias, proj_bias=args.proj_bias, proj_drop=args.proj_drop,
        )
        return {"norm1": args.norm_layer(args.dim), "attn": attn}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        return block.attn(block.norm1(x)), None

register_kind(Taylor())
