"""Softmax self-attention with per-head, shared (Reuse Attention) or grouped maps, map out / map in.

Papers: multi-head attention (Vaswani et al. 2017; timm's ViT layout), Reuse Attention (UniForm:
one query/key map reused by every value head), attention map reuse across layers (Shim, Choi, Sung
2023: a later layer projects V only and applies an earlier layer's map).
All attention maths is in `attnreuse.ops`; this module only projects and reshapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse import ops
from attnreuse.layers._checks import check_divides, check_positive_int, check_rate, check_tokens

__all__ = ["Attention"]


class Attention(nn.Module):
    """Self-attention on tokens x: [B, N, C] -> [B, N, C] with `qk_heads` maps for `num_heads` value heads.

    Layouts and their parameter names:
    - multi-head (`qk_heads == num_heads` and `qk_dim == dim`, the default): `qkv` Linear(C -> 3C),
      timm's names and row order ([q; k; v], each head-major), so timm ViT/DeiT weights load as-is.
    - Reuse Attention (`qk_heads == 1`) and grouped reuse (`1 < qk_heads < num_heads`), or any
      `qk_dim != dim`: `qk` Linear(C -> 2 qk_dim) gives `qk_heads` query and key heads of width
      `qk_dim // qk_heads`, rows [q; k]; `v` Linear(C -> C) gives `num_heads` value heads of width
      C // num_heads. Value head j uses map j // (num_heads // qk_heads).
    - V only (`v_only=True`, a layer that always applies an earlier layer's map): `v` alone.
    - deployed (`fuse()`, for inference): a `qk` + `v` layer's two projections become one `qkv`
      Linear(C -> 2 qk_dim + C), rows [q; k; v].
    Every layout has `proj` Linear(C -> C); `q_norm` / `k_norm` (per query/key head, `qk_norm=True`)
    exist unless `v_only`.
    `qk_dim` defaults to `qk_heads * C // num_heads` (each map computed at the value heads' width).

    forward(x, attn_map=None, return_map=False):
    - `attn_map` [B, Hm, N, N] (softmax probabilities from an earlier layer, num_heads % Hm == 0):
      the layer projects V only and applies the map (cross-layer reuse).
    - `return_map=True`: also returns this layer's map [B, qk_heads, N, N] (materialised); without
      it the map is never materialised (row-tiled or fused kernels, see `attnreuse.ops`).
    Attention dropout, when training with `attn_drop > 0`, runs on a materialised map.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qk_heads: int | None = None,
        qk_dim: int | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        v_only: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_divides("num_heads", num_heads, "dim", dim)
        head_dim = dim // num_heads
        qk_heads = num_heads if qk_heads is None else check_positive_int("qk_heads", qk_heads)
        check_divides("qk_heads", qk_heads, "num_heads", num_heads)
        qk_dim = qk_heads * head_dim if qk_dim is None else check_positive_int("qk_dim", qk_dim)
        check_divides("qk_heads", qk_heads, "qk_dim", qk_dim)
        if qk_norm and norm_layer is None and not v_only:
            raise ValueError("qk_norm=True needs a norm_layer (e.g. nn.LayerNorm), got norm_layer=None")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.qk_heads = qk_heads
        self.qk_dim = qk_dim
        self.qk_head_dim = qk_dim // qk_heads
        self.scale = self.qk_head_dim**-0.5
        self.v_only = bool(v_only)
        # one map per value head at the full width: timm's `qkv` layout (the other layouts fuse into
        # a `qkv` of their own rows only when deployed, `fuse()`)
        self.mha_layout = not self.v_only and qk_heads == num_heads and qk_dim == dim
        self.fused_qkv = self.mha_layout
        if self.fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        elif not self.v_only:
            self.qk = nn.Linear(dim, 2 * qk_dim, bias=qkv_bias)
        if not self.fused_qkv:
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
        if not self.v_only:
            self.q_norm = norm_layer(self.qk_head_dim) if qk_norm else nn.Identity()
            self.k_norm = norm_layer(self.qk_head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(check_rate("attn_drop", attn_drop))
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(check_rate("proj_drop", proj_drop))

    def extra_repr(self) -> str:
        if self.v_only:
            return f"dim={self.dim}, num_heads={self.num_heads}, layout=v only (applies a given map)"
        layout = "qkv" if self.mha_layout else "qk + v, fused into qkv" if self.fused_qkv else "qk + v"
        return f"dim={self.dim}, num_heads={self.num_heads}, qk_heads={self.qk_heads}, qk_dim={self.qk_dim}, layout={layout}"

    def _heads(self, t: Tensor, heads: int) -> Tensor:
        """[B, N, heads * d] -> [B, heads, N, d]."""
        B, N, _ = t.shape
        return t.view(B, N, heads, -1).transpose(1, 2)

    @torch.no_grad()
    def fuse(self) -> "Attention":
        """Deployment form, in place: a `qk` + `v` layer's projections become one `qkv` Linear (rows
        [q; k; v]), one matrix product per layer instead of two. ViT-S's Reuse Attention layer
        (C = 384 -> 128 + 384 rows, 197 tokens, 2 threads, Intel Xeon with AMX) ran its
        projections in 291 instead of 535 us in bf16 and 707 instead of 831 us in float32. The
        state dict changes with it (`qkv` in place of `qk`, `v`): train and save the unfused layer.
        Returns self; a multi-head or V-only layer is left as it is."""
        if self.fused_qkv or self.v_only:
            return self
        weight = torch.cat([self.qk.weight, self.v.weight])
        bias = None if self.qk.bias is None else torch.cat([self.qk.bias, self.v.bias])
        self.qkv = nn.Linear(self.dim, weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
        self.qkv.weight.copy_(weight)
        if bias is not None:
            self.qkv.bias.copy_(bias)
        del self.qk, self.v
        self.fused_qkv = True
        return self

    def _project_v(self, x: Tensor) -> Tensor:
        """V only: x [B, N, C] -> [B, num_heads, N, head_dim] (the V rows of `qkv` when fused)."""
        if self.fused_qkv:
            rows = 2 * self.qk_dim
            bias = None if self.qkv.bias is None else self.qkv.bias[rows:]
            return self._heads(F.linear(x, self.qkv.weight[rows:], bias), self.num_heads)
        return self._heads(self.v(x), self.num_heads)

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, N, C] -> q, k [B, qk_heads, N, qk_head_dim], v [B, num_heads, N, head_dim]."""
        B, N, _ = x.shape
        if self.mha_layout:
            q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            if self.fused_qkv:  # a deployed qk + v layer
                qk, v = self.qkv(x).split([2 * self.qk_dim, self.dim], dim=-1)
            else:
                qk, v = self.qk(x), self.v(x)
            q, k = qk.reshape(B, N, 2, self.qk_heads, self.qk_head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            v = self._heads(v, self.num_heads)
        return self.q_norm(q), self.k_norm(k), v

    def _merge(self, out: Tensor) -> Tensor:
        """[B, num_heads, N, head_dim] -> projected [B, N, C]."""
        B, _, N, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, self.dim)))

    def forward(
        self, x: Tensor, attn_map: Tensor | None = None, return_map: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        check_tokens(x, self.dim)
        if attn_map is not None:
            if return_map:
                raise ValueError("return_map=True with a given attn_map: the layer computes no map of its own")
            out = ops.apply_map(self.attn_drop(attn_map), self._project_v(x))
            return self._merge(out)
        if self.v_only:
            raise ValueError("this layer was built with v_only=True: pass the map of an earlier layer as attn_map")
        q, k, v = self._project_qkv(x)
        if (self.training and self.attn_drop.p > 0) or (return_map and ops.get_backend() == "dense"):
            attn = ops.attention_map(q, k, scale=self.scale)
            out = self._merge(ops.apply_map(self.attn_drop(attn), v))
            return (out, attn) if return_map else out
        if return_map:  # the ops backend writes the map (auto / tiled: FLAT tiles; sdpa raises)
            out, attn = ops.softmax_attention(q, k, v, scale=self.scale, return_map=True)
            return self._merge(out), attn
        return self._merge(ops.softmax_attention(q, k, v, scale=self.scale))
