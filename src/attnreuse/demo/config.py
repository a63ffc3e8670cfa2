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
import math
from dataclasses import dataclass, field

__all__ = ["QUICK", "STAGES", "DemoConfig"]

def _k(default, help: str):
    """A field with its command-line help (`attnreuse demo --help` lists every one)."""
    return field(default=default, metadata={"help": help})


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
    minilm_plan: str = _k("mha,mha,share,mha,share,mha", "the plan distilled (the analysis' suggestion is shown zero-shot)")
    minilm_budget: float = _k(0.67, "the suggestion's attention MACs as a fraction of all-mha")
    minilm_analysis_texts: int = _k(48, "held-out texts the maps are captured on")
    minilm_eval_texts: int = _k(200, "held-out texts fidelity is measured on (top-10 overlap needs more than 10)")
    minilm_distill_steps: int = _k(250, "distillation steps: the largest knob (0.3-0.6 s a step on a quiet 2-core machine)")
    minilm_batch_size: int = _k(32, "texts per distillation step")
    minilm_lr: float = _k(1e-4, "peak distillation learning rate")
    minilm_tokens: int = _k(512, "latency input length, batch 1 (the model's longest)")
    minilm_rounds: int = _k(4, "interleaved timing rounds")
    minilm_repeats: int = _k(8, "timed calls per model and runtime, over all rounds")
    minilm_budget_s: float = _k(280.0, "seconds the stage should take (230-272 s measured on a quiet 2-core AMD EPYC)")
    # 2. UniForm against the EfficientViT-M of the same widths, with the no-attention probe
    uniform_model: str = _k("uniform_s", "a uniform_* model; its baseline is the EfficientViT-M of the same widths")
    uniform_img_size: int = _k(224, "input size")
    uniform_rounds: int = _k(6, "interleaved timing rounds")
    uniform_repeats: int = _k(30, "timed calls at least, over all rounds")
    uniform_min_time_s: float = _k(5.0, "seconds of timed calls per model and runtime, over all rounds")
    uniform_budget_s: float = _k(60.0, "seconds the stage should take")
    # 3. ViT-S with each plan (random weights: latency only)
    vit_models: tuple[str, ...] = _k((
        "vit_attnreuse_small_patch16_224", "vit_reuse_small_patch16_224", "vit_mapshare_small_patch16_224",
        "deit_taylor_small_patch16_224",
    ), "ViT-S plan models (vit_attnreuse_* is the mha baseline, added when missing)")  # fmt: skip
    vit_img_sizes: tuple[int, ...] = _k((224, 384), "input sizes (384 costs about 3x 224)")
    vit_rounds: int = _k(4, "interleaved timing rounds")
    vit_repeats: int = _k(8, "timed calls at least, over all rounds")
    vit_min_time_s: float = _k(0.0, "seconds of timed calls per model, over all rounds")
    vit_budget_s: float = _k(50.0, "seconds the stage should take")
    # 4. the attention operators against N (batch 1, ViT widths: 8 heads of 32)
    op_ops: tuple[str, ...] = _k(("sdpa_mha", "flat_mha", "reuse", "taylor"), "operators (attnreuse bench ops names)")
    op_tokens: tuple[int, ...] = _k((196, 1024, 4096, 8192), "sequence lengths N (8192 is half the sweep's time)")
    op_repeats: int = _k(5, "timed calls at least per case")
    op_min_time_s: float = _k(0.3, "seconds of timed calls per case")
    op_budget_s: float = _k(60.0, "seconds the stage should take")

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
            # nan passed `< 0`, and an infinite *_min_time_s times for ever
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        if self.minilm_lr == 0:  # checked here, not minutes into the stage by the distillation
            raise ValueError("minilm_lr must be above 0, got 0")
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
