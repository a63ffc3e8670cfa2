"""The fused `qkv` -> heads -> `proj` frame shared by the linear-cost attention layers.

Parameter names follow timm's `Attention` (`qkv`, `q_norm`, `k_norm`, `proj`) so ViT/DeiT weights load.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnreuse.layers._checks import check_divides, check_positive_int, check_rate, check_tokens


class FusedQkvAttention(nn.Module):
    """Base: x [B, N, C] -> q, k, v [B, H, N, C // H]; subclasses define `attend(q, k, v)`."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_divides("num_heads", num_heads, "dim", dim)
        if qk_norm and norm_layer is None:
            raise ValueError("qk_norm=True needs a norm_layer (e.g. nn.LayerNorm), got norm_layer=None")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(check_rate("proj_drop", proj_drop))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q, k, v: [B, H, N, d] -> [B, H, N, d]."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        check_tokens(x, self.dim)
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = self.attend(self.q_norm(q), self.k_norm(k), v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
