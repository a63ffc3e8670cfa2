"""What each model is benchmarked against, read from the model families that define it.

Each family module keeps a `BENCH` table beside its `default_cfgs`: its `family` label, the
`baselines` each of its models is compared with, and the label of those baselines where they are
another library's models (`baseline_family`). timm's `PretrainedCfg` is a closed dataclass (it
takes no extra keys), so the tables sit beside the cfgs rather than in them. `attnreuse bench
models` asks these functions; it knows no family by name.
"""

from __future__ import annotations

from attnreuse.models import uniform, vit

__all__ = ["PEERS", "baseline_of", "default_models", "family_of"]

_FAMILIES = (uniform, vit)

# timm models benchmarked beside attnreuse's own (`default_models`): every UniForm baseline, then
# other small ViTs and hybrids of the field.
PEERS = (
    *uniform.BENCH["baselines"].values(), "deit_tiny_patch16_224", "deit_small_patch16_224",
    "vit_small_patch16_224", "fastvit_t8", "mobilevit_xxs", "efficientvit_b0",
)  # fmt: skip


def _family_module(name: str):
    """The attnreuse family module that registers `name`, or None."""
    return next((m for m in _FAMILIES if name in m.default_cfgs), None)


def baseline_of(name: str) -> str | None:
    """The model `name` (a registered name) is compared with, or None (it is a baseline or a peer)."""
    module = _family_module(name)
    return None if module is None else module.BENCH["baselines"].get(name)


def family_of(name: str) -> str:
    """The family label of `name`: its module's, its baselines' (`baseline_family`), else "peer"."""
    module = _family_module(name)
    if module is not None:
        return module.BENCH["family"]
    for m in _FAMILIES:
        if "baseline_family" in m.BENCH and name in m.BENCH["baselines"].values():
            return m.BENCH["baseline_family"]
    return "peer"


def default_models() -> list[str]:
    """Every registered attnreuse model, then the timm peers."""
    from attnreuse.models import list_models

    return [*list_models(), *PEERS]
