"""Kernelised linear attention baselines as a layer: Katharopoulos et al. (ICML 2020, elu + 1) and
EfficientViT (Cai et al., ICCV 2023, ReLU). The maths is `ops.linear_attention`."""

from __future__ import annotations

from torch import Tensor, nn

from attnreuse import ops
from attnreuse.layers._qkv import FusedQkvAttention

__all__ = ["LinearAttention"]


class LinearAttention(FusedQkvAttention):
    """x [B, N, C] -> [B, N, C]; parameters `qkv`, `proj` (timm names); feature_map "elu" or "relu"."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        feature_map: str = "elu",
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, qk_norm, proj_bias, proj_drop, norm_layer)
        if feature_map not in ops.linear.FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {ops.linear.FEATURE_MAPS}, got {feature_map!r}")
        self.feature_map = feature_map

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, feature_map={self.feature_map!r}"

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return ops.linear_attention(q, k, v, feature_map=self.feature_map)
