"""What the demo runs, as data: its four stages, the size of each, and the time each should take.

Each stage reads only its own fields (those named with its prefix, plus `threads`); its cached
result is reused while they are unchanged. The `*_budget_s` fields are what a stage should take on
a quiet 2-core machine (the whole demo, set-up included, fits 10 minutes); a stage that runs over
its budget says so in the report, with the field that sizes it. The knobs, largest effect first:
`minilm_distill_steps` (about 0.3-0.6 s a step), `vit_img_sizes` (384 costs 3x 224),
`*_rounds` / `*_repeats` (timing), `op_tokens` (8192 is half the sweep).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["QUICK", "STAGES", "DemoConfig"]

STAGES = ("minilm", "uniform", "vit", "ops")
_PREFIX = {"minilm": "minilm_", "uniform": "uniform_", "vit": "vit_", "ops": "op_"}

# A tiny version of every stage: the same code paths in well under two minutes.
QUICK = dict(
    minilm_analysis_texts=8, minilm_eval_texts=24, minilm_distill_steps=3, minilm_batch_size=8, minilm_tokens=64,
    minilm_rounds=1, minilm_repeats=2,
    uniform_img_size=64, uniform_rounds=1, uniform_repeats=2, uniform_min_time_s=0.0,
    vit_img_sizes=(32,), vit_rounds=1, vit_repeats=2, vit_min_time_s=0.0,
    op_tokens=(64, 196), op_repeats=2, op_min_time_s=0.0,
)  # fmt: skip


@dataclass(frozen=True)
class DemoConfig:
    """The demo run. Build the smoke configuration with `DemoConfig.quick_config()`."""

    output: str = "runs/demo"
    stages: tuple[str, ...] = STAGES
    threads: int = 2
    quick: bool = False
    force: bool = False
    progress: bool = True
    # 1. all-MiniLM-L6-v2 (the optional wheel): analysis, conversion, distillation, fidelity, latency
    minilm_plan: str = "mha,mha,share,mha,share,mha"  # the plan distilled (the suggested one is shown zero-shot)
    minilm_budget: float = 0.67  # the analysis' suggestion: attention MACs as a fraction of all-mha
    minilm_analysis_texts: int = 48  # held-out texts the maps are captured on
    minilm_eval_texts: int = 200  # held-out texts fidelity is measured on (top-10 needs more than 10)
    minilm_distill_steps: int = 250
    minilm_batch_size: int = 32
    minilm_lr: float = 1e-4
    minilm_tokens: int = 512  # latency input length (batch 1), the model's longest
    minilm_rounds: int = 4
    minilm_repeats: int = 8
    minilm_budget_s: float = 240.0
    # 2. UniForm against the EfficientViT-M of the same widths, with the no-attention probe
    uniform_model: str = "uniform_s"
    uniform_img_size: int = 224
    uniform_rounds: int = 6
    uniform_repeats: int = 30
    uniform_min_time_s: float = 5.0
    uniform_budget_s: float = 75.0
    # 3. ViT-S with each plan (random weights: latency only)
    vit_models: tuple[str, ...] = (
        "attnreuse_vit_small_patch16_224", "reuse_vit_small_patch16_224", "mapshare_vit_small_patch16_224",
        "taylor_deit_small_patch16_224",
    )  # fmt: skip
    vit_img_sizes: tuple[int, ...] = (224, 384)
    vit_rounds: int = 4
    vit_repeats: int = 8
    vit_min_time_s: float = 0.0
    vit_budget_s: float = 60.0
    # 4. the attention operators against N (batch 1, ViT widths: 8 heads of 32)
    op_ops: tuple[str, ...] = ("sdpa_mha", "flat_mha", "reuse", "taylor")
    op_tokens: tuple[int, ...] = (196, 1024, 4096, 8192)
    op_repeats: int = 5
    op_min_time_s: float = 0.3
    op_budget_s: float = 40.0

    @classmethod
    def quick_config(cls, **overrides) -> "DemoConfig":
        return cls(**{**QUICK, "quick": True, **overrides})

    def __post_init__(self) -> None:
        for name in ("stages", "vit_models", "vit_img_sizes", "op_ops", "op_tokens"):
            if not isinstance(getattr(self, name), tuple) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty tuple, got {getattr(self, name)!r}")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages must be a subset of {list(STAGES)}, got {list(self.stages)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{f.name} must be a positive int, got {value!r}")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{f.name} must be a number >= 0, got {value!r}")
        if not 0 < self.minilm_budget <= 1:
            raise ValueError(f"minilm_budget must be a fraction in (0, 1], got {self.minilm_budget!r}")
        if self.minilm_eval_texts <= 10:
            raise ValueError(f"minilm_eval_texts must be above 10 (top-10 overlap), got {self.minilm_eval_texts}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in (*self.vit_img_sizes, *self.op_tokens)):
            raise ValueError(f"vit_img_sizes and op_tokens must be positive ints, got {self.vit_img_sizes!r}, {self.op_tokens!r}")

    def stage_config(self, stage: str) -> dict:
        """The fields `stage` depends on: its cache key (a change in any of them reruns it)."""
        prefix = _PREFIX[stage]
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        chosen = {k: v for k, v in fields.items() if k.startswith(prefix) and not k.endswith("_budget_s")}
        return {"threads": self.threads, **chosen}

    def budget_s(self, stage: str) -> float:
        return getattr(self, f"{_PREFIX[stage]}budget_s")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
