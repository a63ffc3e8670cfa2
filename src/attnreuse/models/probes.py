"""Mixer probes: how much of a UniForm model's speed-up over its baseline the token mixer can still move.

A probe is a benchmarking-only variant of a UniForm model, named `MODEL:mixer=PROBE`:
- `pointwise`: every Reuse Attention mixer keeps only its two 1x1 convs and the ReLU between
  them, `Y = proj(ReLU(cat([qk(x), x[:, C/2:]])))`: no windows, scores, softmax, value convs or
  A V product. It is the cheapest mixer that still has the projections every EfficientViT-style
  mixer has, so its speed-up over the baseline is a ceiling for any faster attention kernel.
- `none`: every mixer (and its residual add) removed: the ceiling for any mixer at all.
The outputs are not UniForm's (a probe is never trained or exported for use); only their cost
means anything. Timed beside the full model and the baseline in `attnreuse bench models`, they
split the gap to a speed target into the part the mixer could close and the part it cannot
(Amdahl's law over the layers both networks share).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnreuse.models import uniform
from attnreuse.models.uniform import UniFormBlock

__all__ = ["MIXER_PROBES", "PointwiseMixer", "apply_mixer_probe", "split_probe"]

MIXER_PROBES = ("pointwise", "none")
_SEP = ":mixer="


def split_probe(name: str) -> tuple[str, str | None]:
    """`"uniform_l:mixer=none"` -> ("uniform_l", "none"); a plain name -> (name, None)."""
    if _SEP not in name:
        return name, None
    base, probe = name.split(_SEP, 1)
    if probe not in MIXER_PROBES:
        raise ValueError(f"mixer probe in {name!r} must be one of {MIXER_PROBES}, got {probe!r}")
    if base not in uniform.default_cfgs:
        raise ValueError(f"mixer probes apply to UniForm models ({', '.join(uniform.default_cfgs)}), got {name!r}")
    return base, probe


class PointwiseMixer(nn.Module):
    """A Reuse Attention mixer's 1x1 convs alone: x [B, C, H, W] -> proj(ReLU(cat([qk(x), x[:, C/2:]]))),
    [B, C, H, W]. Holds the mixer's own `qk` ([Q; K], C -> C/2), `act` and `proj` (C -> C) modules."""

    def __init__(self, mixer: nn.Module):
        super().__init__()
        self.qk, self.act, self.proj = mixer.qk, mixer.act, mixer.proj

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[1] // 2
        return self.proj(self.act(torch.cat([self.qk(x), x[:, half:]], dim=1)))


def apply_mixer_probe(model: nn.Module, probe: str) -> nn.Module:
    """Turn every UniForm block's mixer of `model` into the probe, in place (before `fuse()`:
    the probe's convs fold like the mixer's). Returns `model`."""
    if probe not in MIXER_PROBES:
        raise ValueError(f"probe must be one of {MIXER_PROBES}, got {probe!r}")
    blocks = [m for m in model.modules() if isinstance(m, UniFormBlock)]
    if not blocks:
        raise ValueError(f"mixer probes apply to UniForm models, got a {type(model).__name__}")
    for block in blocks:
        if probe == "none":
            block.mixer = nn.Identity()
        else:
            block.mixer.m = PointwiseMixer(block.mixer.m)
    return model
