"""UniForm's token mixers as registered objects: which module a `UniFormBlock` holds as `mixer`.

A mixer is one `UniFormMixer` registered under its name (`register_mixer`); UniForm takes it by
name (`mixer="reuse"`, the paper's) and `apply_mixer` swaps it into a built model in place, so a new
mixer is one registration here and the model code has no `if mixer == ...`. Shipped:
- `reuse`: windowed Reuse Attention (`attnreuse.layers.ReuseAttention2d`), the paper's mixer.
- `pointwise`: only the Reuse Attention mixer's two 1x1 convs and the ReLU between them,
  `Y = proj(ReLU(cat([qk(x), x[:, C/2:]])))`: no windows, scores, softmax, value convs or A V
  product. The cheapest mixer that still has the projections every EfficientViT-style mixer has:
  its speed-up over a baseline is a ceiling for any faster attention kernel.
- `none`: no mixer (and no residual add): the ceiling for any mixer at all.
`pointwise` and `none` are probes (`attnreuse bench models uniform_*:mixer=PROBE`): a network built
with them trains, but it is not UniForm; only their cost says something about UniForm.

Why not a plan `Kind` (`attnreuse.plan`): a Kind is one attention layer of a token-sequence host
(the ViT, hf encoders): it takes a dense layer's Q/K/V (`vit_dense_weights`, `retrofit`), passes a
softmax map or its output to later layers (`computes_map`, `needs_previous`) and has a cost in a
dense layer's parts. UniForm's mixer works on maps [B, C, H, W] in windows, holds no dense layer's
weights, passes nothing between blocks and has no retrofit: none of those hooks would apply, so the
mixers have a registry of their own (the same `attnreuse.plan.registry.Registry`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attnreuse.layers.conv import ConvBN, Residual
from attnreuse.layers.reuse_mixer import ReuseAttention2d
from attnreuse.plan.registry import Registry

__all__ = ["PointwiseMixer", "UniFormMixer", "get_mixer", "mixer_names", "register_mixer"]

class UniFormMixer:
    """Base class of a UniForm mixer. Subclasses set `name` and `help` and implement `build` and
    `replace` (the module a block holds as `mixer`: it maps [B, C, H, W] to the same, residual add
    included, so state-dict keys stay `...mixer.m.*` where the mixer keeps the Reuse Attention's)."""

    name: str = ""
    help: str = ""

    def build(self, dim: int, num_heads: int, *, key_dim: int, window_size: int, kernels: Sequence[int],
              drop_path: float) -> nn.Module:
        """A new block's mixer."""
        raise NotImplementedError

    def replace(self, mixer: nn.Module) -> nn.Module:
        """The mixer in place of `mixer`, a built block's Reuse Attention one (`Residual` of a
        `ReuseAttention2d`), reusing its modules where this mixer keeps them."""
        raise NotImplementedError


def register_mixer(mixer: UniFormMixer) -> UniFormMixer:
    """Add `mixer` under `mixer.name`; a second mixer of the same name is an error."""
    return _MIXERS.register(mixer)


def get_mixer(name: str) -> UniFormMixer:
    return _MIXERS.get(name)


def mixer_names() -> tuple[str, ...]:
    return _MIXERS.names()


_MIXERS = Registry("mixer", "UniForm mixer")


class _Reuse(UniFormMixer):
    name = "reuse"
    help = "windowed Reuse Attention: one map per window shared by every head (the paper's mixer)"

    def build(self, dim, num_heads, *, key_dim, window_size, kernels, drop_path):
        mixer = ReuseAttention2d(dim, num_heads, key_dim=key_dim, window_size=window_size, kernels=kernels)
        return Residual(mixer, drop_path)

    def replace(self, mixer):
        return mixer


class PointwiseMixer(nn.Module):
    """A Reuse Attention mixer's 1x1 convs alone: x [B, C, H, W] -> proj(ReLU(cat([qk(x), x[:, C/2:]]))),
    [B, C, H, W]. `qk` ([Q; K], C -> C/2), `act` and `proj` (C -> C) as Reuse Attention names them."""

    def __init__(self, dim: int, *, qk: nn.Module | None = None, act: nn.Module | None = None,
                 proj: nn.Module | None = None):
        super().__init__()
        self.qk = qk if qk is not None else ConvBN(dim, dim // 2)
        self.act = act if act is not None else nn.ReLU()
        self.proj = proj if proj is not None else ConvBN(dim, dim, bn_weight_init=0.0)

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[1] // 2
        return self.proj(self.act(torch.cat([self.qk(x), x[:, half:]], dim=1)))


class _Pointwise(UniFormMixer):
    name = "pointwise"
    help = "probe: only Reuse Attention's 1x1 convs and ReLU (a ceiling for any faster attention kernel)"

    def build(self, dim, num_heads, *, key_dim, window_size, kernels, drop_path):
        return Residual(PointwiseMixer(dim), drop_path)

    def replace(self, mixer):
        m = mixer.m
        mixer.m = PointwiseMixer(m.dim, qk=m.qk, act=m.act, proj=m.proj)
        return mixer


class _NoMixer(UniFormMixer):
    name = "none"
    help = "probe: no mixer and no residual add (the ceiling for any mixer)"

    def build(self, dim, num_heads, *, key_dim, window_size, kernels, drop_path):
        return nn.Identity()

    def replace(self, mixer):
        return nn.Identity()


register_mixer(_Reuse())
register_mixer(_Pointwise())
register_mixer(_NoMixer())
