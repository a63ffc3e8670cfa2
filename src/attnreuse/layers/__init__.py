"""nn.Modules built on `attnreuse.ops`: attention layers on token sequences [B, N, C] and UniForm's conv/mixer pieces on maps [B, C, H, W]."""

from attnreuse.layers.attention import Attention
from attnreuse.layers.conv import ConvBN, ConvFFN, NormLinear, PatchMerging, Residual
from attnreuse.layers.linear import LinearAttention
from attnreuse.layers.reuse_mixer import ReuseAttention2d, window_partition, window_reverse
from attnreuse.layers.skipat import EfficientChannelAttention, SkipAtPhi
from attnreuse.layers.taylor import TaylorAttention
from attnreuse.layers.token_attention import MapSelfAttention, SequencePhi, SharedMapSelfAttention, TaylorSelfAttention

__all__ = [
    "Attention",
    "MapSelfAttention",
    "SequencePhi",
    "SharedMapSelfAttention",
    "TaylorSelfAttention",
    "EfficientChannelAttention",
    "LinearAttention",
    "SkipAtPhi",
    "TaylorAttention",
    "ConvBN",
    "ConvFFN",
    "NormLinear",
    "PatchMerging",
    "Residual",
    "ReuseAttention2d",
    "window_partition",
    "window_reverse",
]
