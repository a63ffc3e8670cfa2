"""ViTALiTy linear Taylor attention as a layer (Dass et al., HPCA 2023).

Inference: `ops.taylor_attention` alone (first-order Taylor softmax, O(N d^2)). Training adds a
sparse component (softmax on 4-bit q/k, entries below `sparse_threshold` dropped), the regulariser
the paper trains the low-rank part with, in one of two forms (`sparse_mode`):
- "residual" (default): `ops.taylor_residual_attention`, the higher-order terms only (kept
  softmax entries minus their Taylor weights). Training sees (1 - w) Taylor + w softmax on the kept
  entries, so the output keeps its scale while the weight w anneals; inference drops exactly those terms.
- "additive": `ops.sparse_attention` added whole, as the public code does. Its threshold (0.002)
  drops almost nothing at these sizes (uniform weight 1/N), so at w = 1 the layer trains Taylor +
  a second, dense softmax attention: twice the deployed output at initialisation, halved while w
  anneals. On digits (65 tokens) that moving target left seed 0 10 points below the other seeds
  (docs/taylor.md, "Stable training").
At full weight to the end, either form trains a different function from the one inference runs:
on digits (pico ViT, 16 tokens, seed 0) the additive form cost 8.6 points of test top-1 (88.1%
against 96.7% without the branch). So the branch's weight is annealed to 0 (`sparse_anneal`, the
fraction of training by which it reaches 0; the train loop calls `set_progress`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnreuse import ops
from attnreuse.layers._qkv import FusedQkvAttention

__all__ = ["SPARSE_MODES", "TaylorAttention"]

SPARSE_MODES = ("residual", "additive")


class TaylorAttention(FusedQkvAttention):
    """x [B, N, C] -> [B, N, C]; parameters `qkv`, `proj` (timm/DeiT names, so DeiT weights load).

    center: "tokens" (the paper; keys centred over tokens), "features" (the public code's variant,
    which its checkpoints were trained with) or None. use_sparse=False drops the training-time
    sparse branch; in eval mode it never runs. sparse_mode: "residual" or "additive" (module doc).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        center: str | None = "tokens",
        use_sparse: bool = True,
        sparse_threshold: float = 0.002,
        sparse_bits: int = 4,
        sparse_mode: str = "residual",
        sparse_anneal: float | None = 0.5,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, qk_norm, proj_bias, proj_drop, norm_layer)
        if center not in ops.linear.TAYLOR_CENTERS:
            raise ValueError(f"center must be one of {ops.linear.TAYLOR_CENTERS}, got {center!r}")
        if isinstance(sparse_threshold, bool) or not isinstance(sparse_threshold, (int, float)) or not 0 <= sparse_threshold < 1:
            raise ValueError(f"sparse_threshold must be a float in [0, 1), got {sparse_threshold!r}")
        if isinstance(sparse_bits, bool) or not isinstance(sparse_bits, int) or not 2 <= sparse_bits <= 16:
            raise ValueError(f"sparse_bits must be an int in [2, 16], got {sparse_bits!r}")
        if sparse_mode not in SPARSE_MODES:
            raise ValueError(f"sparse_mode must be one of {SPARSE_MODES}, got {sparse_mode!r}")
        if sparse_anneal is not None and (
            isinstance(sparse_anneal, bool) or not isinstance(sparse_anneal, (int, float)) or not 0 < sparse_anneal <= 1
        ):
            raise ValueError(f"sparse_anneal must be a fraction in (0, 1] or None, got {sparse_anneal!r}")
        self.center = center
        self.sparse_mode = sparse_mode
        self.sparse_anneal = None if sparse_anneal is None else float(sparse_anneal)
        self.sparse_weight = 1.0
        self.use_sparse = bool(use_sparse)
        self.sparse_threshold = float(sparse_threshold)
        self.sparse_bits = sparse_bits

    def extra_repr(self) -> str:
        sparse = (
            f"{self.sparse_mode} {self.sparse_threshold} ({self.sparse_bits}-bit, training only)"
            if self.use_sparse
            else "off"
        )
        return f"dim={self.dim}, num_heads={self.num_heads}, center={self.center!r}, sparse={sparse}"

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] (the train loop calls this every step): with `sparse_anneal`
        the sparse branch's weight falls linearly from 1 to 0 at that fraction of training."""
        if self.sparse_anneal is not None:
            self.sparse_weight = max(0.0, 1.0 - float(fraction) / self.sparse_anneal)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = ops.taylor_attention(q, k, v, scale=self.scale, center=self.center)
        if self.training and self.use_sparse and self.sparse_weight > 0:
            kw = dict(threshold=self.sparse_threshold, bits=self.sparse_bits, scale=self.scale)
            if self.sparse_mode == "residual":
                sparse = ops.taylor_residual_attention(q, k, v, center=self.center, **kw)
            else:
                sparse = ops.sparse_attention(q, k, v, **kw)
            out = torch.add(out, sparse, alpha=self.sparse_weight)
        return out
