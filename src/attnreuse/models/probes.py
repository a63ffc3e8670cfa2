"""Mixer probes: how much of a UniForm model's speed-up over its baseline the token mixer can still move.

A probe is a benchmarking variant of a UniForm model, named `MODEL:mixer=PROBE`: the model with
every token mixer swapped for one of UniForm's registered probe mixers (`uniform_mixers`):
- `pointwise`: only the Reuse Attention mixer's two 1x1 convs and the ReLU between them: the
  cheapest mixer that still has the projections, so its speed-up over the baseline is a ceiling for
  any faster attention kernel.
- `none`: every mixer (and its residual add) removed: the ceiling for any mixer at all.
The outputs are not UniForm's; only their cost means anything. Timed beside the full model and the
baseline in `attnreuse bench models`, they split the gap to a speed target into the part the mixer
could close and the part it cannot (Amdahl's law over the layers both networks share).
"""

from __future__ import annotations

from torch import nn

from attnreuse.models import uniform

__all__ = ["MIXER_PROBES", "apply_mixer_probe", "split_probe"]

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


def apply_mixer_probe(model: nn.Module, probe: str) -> nn.Module:
    """Swap the probe mixer into every UniForm block of `model`, in place (`uniform.apply_mixer`,
    before `fuse()`: the pointwise probe's convs fold like the mixer's). Returns `model`."""
    if probe not in MIXER_PROBES:
        raise ValueError(f"probe must be one of {MIXER_PROBES}, got {probe!r}")
    return uniform.apply_mixer(model, probe)
