"""ViTALiTy linear Taylor attention as a layer (Dass et al., HPCA 2023).

Inference: `ops.taylor_attention` alone (first-order Taylor softmax, O(N d^2)). Training adds the
sparse component `ops.sparse_attention` (softmax on 4-bit q/k, entries below `sparse_threshold`
dropped) to the output, the regulariser the paper trains the low-rank part with.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnreuse import ops
from attnreuse.layers._qkv import FusedQkvAttention

__all__ = ["TaylorAttention"]


class TaylorAttention(FusedQkvAttention):
    """x [B, N, C] -> [B, N, C]; parameters `qkv`, `proj` (timm/DeiT names, so DeiT weights load).

    center: "tokens" (the paper; keys centred over tokens), "features" (the public code's variant,
    which its checkpoints were trained with) or None. use_sparse=False drops the training-time
    sparse branch; in eval mode it never runs.
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
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, qk_norm, proj_bias, proj_drop, norm_layer)
        if center not in ops.linear.TAYLOR_CENTERS:
            raise ValueError(f"center must be one of {ops.linear.TAYLOR_CENTERS}, got {center!r}")
        if isinstance(sparse_threshold, bool) or not isinstance(sparse_threshold, (int, float)) or not 0 <= sparse_threshold < 1:
            raise ValueError(f"sparse_threshold must be a float in [0, 1), got {sparse_threshold!r}")
        if isinstance(sparse_bits, bool) or not isinstance(sparse_bits, int) or not 2 <= sparse_bits <= 16:
            raise ValueError(f"sparse_bits must be an int in [2, 16], got {sparse_bits!r}")
        self.center = center
        self.use_sparse = bool(use_sparse)
        self.sparse_threshold = float(sparse_threshold)
        self.sparse_bits = sparse_bits

    def extra_repr(self) -> str:
        sparse = f"{self.sparse_threshold} ({self.sparse_bits}-bit, training only)" if self.use_sparse else "off"
        return f"dim={self.dim}, num_heads={self.num_heads}, center={self.center!r}, sparse={sparse}"

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = ops.taylor_attention(q, k, v, scale=self.scale, center=self.center)
        if self.training and self.use_sparse:
            out = out + ops.sparse_attention(
                q, k, v, threshold=self.sparse_threshold, bits=self.sparse_bits, scale=self.scale
            )
        return out
