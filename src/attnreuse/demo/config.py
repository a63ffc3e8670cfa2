"""What the demo runs: the models, the schedule and the operator sweep, as data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["DemoConfig", "DemoModel", "DEMO_MODELS"]

PICO = "vit_attnreuse_pico_patch4_32"  # 32x32 inputs, patch 4: 64 tokens + CLS
# Narrowed to 4 blocks of width 64 (4 heads of 16) so six models train in the demo's ten minutes.
PICO_KW = {"embed_dim": 64, "depth": 4}


@dataclass(frozen=True)
class DemoModel:
    """One row of the demo: a name for the report, a registered model and its kwargs."""

    key: str
    model: str
    model_kwargs: dict = field(default_factory=dict)
    img_size: int | None = None
    baseline: str | None = None  # the key this row's speed-up is measured against


DEMO_MODELS = (
    DemoModel("vit-mha", PICO, {**PICO_KW, "attn_plan": "mha"}),
    DemoModel("vit-reuse", PICO, {**PICO_KW, "attn_plan": "reuse"}, baseline="vit-mha"),
    DemoModel("vit-share", PICO, {**PICO_KW, "attn_plan": ["mha", "share"] * 2}, baseline="vit-mha"),
    DemoModel("vit-skip", PICO, {**PICO_KW, "attn_plan": ["mha", "skip", "skip", "mha"]}, baseline="vit-mha"),
    DemoModel("vit-taylor", PICO, {**PICO_KW, "attn_plan": "taylor"}, baseline="vit-mha"),
    DemoModel("uniform_xs", "uniform_xs", {}, img_size=64),
)


@dataclass(frozen=True)
class DemoConfig:
    """The demo run. `quick` is a minutes-long smoke configuration of the same pipeline."""

    output: str = "runs/demo"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2
    quick: bool = False
    force: bool = False
    progress: bool = True
    op_tokens: tuple[int, ...] = (196, 1024, 4096)
    models: tuple[str, ...] = tuple(m.key for m in DEMO_MODELS)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        known = {m.key for m in DEMO_MODELS}
        unknown = [m for m in self.models if m not in known]
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {sorted(known)}, got {list(self.models)}")
        if not self.op_tokens or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.op_tokens):
            raise ValueError(f"op_tokens must be positive ints, got {self.op_tokens!r}")

    def selected(self) -> tuple[DemoModel, ...]:
        return tuple(m for m in DEMO_MODELS if m.key in self.models)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
