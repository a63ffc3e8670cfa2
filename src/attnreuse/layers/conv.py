"""Convolutional pieces of the EfficientViT skeleton that UniForm (Reuse Attention, seed 000) uses.

`ConvBN` (a bias-free conv followed by BatchNorm, folded into one conv by `fuse()` for deployment),
`NormLinear` (BatchNorm1d + Linear classifier, folded by `fuse()`), `Residual` (x + m(x) with
per-sample stochastic depth), `ConvFFN` (1x1 -> ReLU -> 1x1), `PatchMerging` (1x1 expand,
stride-2 depthwise 3x3, squeeze-excite, 1x1 project). A whole tree is folded by timm's
`reparameterize_model`, which calls every `fuse()`. Every module here takes and returns NCHW maps
[B, C, H, W] (NormLinear: [B, C]).

ConvBN and NormLinear are timm's `efficientvit_msra.ConvNorm` / `NormLinear` with the same parameter
names and the same maths (tests/layers/test_conv.py checks both against timm's with the same
weights). They are not subclasses because timm's fall short here: ConvNorm pads 0 by default (these
pad "same"), runs a 1x1 depthwise conv as a conv (ConvBN multiplies: see `channel_scale`), and both
timm `fuse()`s build the folded layer on the default device and dtype, not the weights'.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, SqueezeExcite, trunc_normal_
from torch import Tensor, nn

__all__ = ["ConvBN", "ConvFFN", "NormLinear", "PatchMerging", "Residual"]


class ConvBN(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d. x: [B, in_chs, H, W] -> [B, out_chs, H', W'].

    `bn_weight_init=0` makes a residual branch start as the identity (EfficientViT's habit).
    Padding defaults to `kernel_size // 2` ("same" for odd kernels at stride 1).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)
        # A 1x1 depthwise conv is a per-channel scale. PyTorch's CPU conv dispatch can send it to
        # a path that loops over the groups, so it runs as a multiply (same maths; see tests).
        self.channel_scale = kernel_size == 1 and stride == 1 and groups == in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_scale:
            return self.bn(x * self.conv.weight.view(1, -1, 1, 1))
        return self.bn(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One conv with bias computing the same map as this module in eval mode (running stats)."""
        c, bn = self.conv, self.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
            dilation=c.dilation, groups=c.groups, bias=True,
        ).to(device=c.weight.device, dtype=c.weight.dtype)
        fused.weight.copy_(c.weight * gain[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * gain)
        return fused


class NormLinear(nn.Module):
    """BatchNorm1d -> Dropout -> Linear. x: [B, in_features] -> [B, out_features]."""

    def __init__(self, in_features: int, out_features: int, *, drop: float = 0.0, std: float = 0.02):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        trunc_normal_(self.linear.weight, std=std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.drop(self.bn(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """One Linear equal to this module in eval mode (dropout is the identity there)."""
        bn, lin = self.bn, self.linear
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * gain
        fused = nn.Linear(lin.in_features, lin.out_features).to(device=lin.weight.device, dtype=lin.weight.dtype)
        fused.weight.copy_(lin.weight * gain[None, :])
        fused.bias.copy_(lin.weight @ shift + lin.bias)
        return fused


class Residual(nn.Module):
    """x + DropPath(m(x)); `m` must keep the shape of x."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.m(x))


class ConvFFN(nn.Module):
    """Pointwise FFN on maps: ConvBN 1x1 (dim -> hidden) -> ReLU -> ConvBN 1x1 (hidden -> dim, BN weight 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw2(self.act(self.pw1(x)))


class PatchMerging(nn.Module):
    """Halve the resolution: x: [B, dim, H, W] -> [B, out_dim, ceil(H/2), ceil(W/2)].

    ConvBN 1x1 (dim -> 4 dim) -> ReLU -> depthwise ConvBN 3x3 stride 2 -> ReLU -> squeeze-excite
    (reduction 4) -> ConvBN 1x1 (4 dim -> out_dim).
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = 4 * dim
        self.conv1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = ConvBN(hidden, hidden, 3, stride=2, groups=hidden)
        self.se = SqueezeExcite(hidden, rd_channels=hidden // 4)
        self.conv3 = ConvBN(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.conv3(self.se(x))
