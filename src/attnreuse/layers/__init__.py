"""nn.Modules on token sequences [B, N, C], built on `attnreuse.ops`."""

from attnreuse.layers.attention import Attention
from attnreuse.layers.linear import LinearAttention
from attnreuse.layers.skipat import EfficientChannelAttention, SkipAtPhi
from attnreuse.layers.taylor import TaylorAttention

__all__ = [
    "Attention",
    "EfficientChannelAttention",
    "LinearAttention",
    "SkipAtPhi",
    "TaylorAttention",
]
