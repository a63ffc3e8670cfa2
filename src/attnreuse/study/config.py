"""What the accuracy study runs, as data: rows x seeds under one recipe, and the retrofits."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from attnreuse._cli_args import arg

__all__ = ["STUDY_ROWS", "StudyRow", "RETROFITS", "StudyConfig"]

PICO = "vit_attnreuse_pico_patch4_32"  # 32x32 inputs, patch 4: 64 tokens + CLS
# Narrowed to 4 blocks of width 64 (4 heads of 16) so six models train in minutes.
PICO_KW = {"embed_dim": 64, "depth": 4}


@dataclass(frozen=True)
class StudyRow:
    """One row of the digits study: a name for the report, a registered model and its kwargs."""

    key: str
    model: str
    model_kwargs: dict = field(default_factory=dict)
    img_size: int | None = None
    baseline: str | None = None  # the key this row is compared with


# The digits rows (once the demo's headline, now the accuracy study's: at 17-65 tokens they compare
# the plans' accuracy, not their speed).
STUDY_ROWS = (
    StudyRow("vit-mha", PICO, {**PICO_KW, "attn_plan": "mha"}),
    StudyRow("vit-reuse", PICO, {**PICO_KW, "attn_plan": "reuse"}, baseline="vit-mha"),
    StudyRow("vit-share", PICO, {**PICO_KW, "attn_plan": ["mha", "share"] * 2}, baseline="vit-mha"),
    StudyRow("vit-skip", PICO, {**PICO_KW, "attn_plan": ["mha", "skip", "skip", "mha"]}, baseline="vit-mha"),
    StudyRow("vit-taylor", PICO, {**PICO_KW, "attn_plan": "taylor"}, baseline="vit-mha"),
    StudyRow("uniform_xs", "uniform_xs", {}, img_size=64),
)

# Target plans for `attnreuse convert` of the mha row (the pico ViT is 4 blocks deep).
RETROFITS = {"share": "mapshare:2", "skip": "skipat:1,2"}


@dataclass(frozen=True)
class StudyConfig:
    """Every row trains with the same recipe and budget for each seed; each mha run is then
    converted to every retrofit plan and fine-tuned by distillation from itself for
    `finetune_fraction` of its training steps."""

    output: str = arg("runs/study", "directory of the runs, report.md and study.json")
    rows: tuple[str, ...] = arg(tuple(m.key for m in STUDY_ROWS), "comma-separated subset of the rows")
    seeds: tuple[int, ...] = arg((0, 1, 2), "comma-separated seeds")
    epochs: int = arg(30, "training epochs of every row")
    # digits are 8x8 images; at 16 the pico ViT sees 16 tokens of 4x4
    vit_img_size: int | None = arg(16, "input size of the pico ViT rows")
    batch_size: int = arg(64, "training batch size")
    lr: float = arg(3e-3, "peak learning rate of every row")
    retrofits: tuple[str, ...] = arg(tuple(RETROFITS), f"comma-separated retrofits of the mha runs ({', '.join(RETROFITS)})")
    finetune_fraction: float = arg(0.2, "fine-tune budget as a fraction of training steps")
    finetune_lr: float = arg(3e-3, "fine-tune peak lr (1 warm-up epoch)")
    jobs: int = arg(2, "runs at a time")
    threads_per_job: int = arg(1, "torch threads of each run")
    tolerance_points: float = arg(1.0, "accuracy points a retrofit may lose against its source and pass")
    force: bool = arg(False, "redo every run instead of reusing finished ones")
    quick: bool = arg(False, "one epoch of three batches per run: a smoke test of the pipeline")

    def __post_init__(self) -> None:
        if self.vit_img_size is not None and (
            isinstance(self.vit_img_size, bool) or not isinstance(self.vit_img_size, int) or self.vit_img_size % 4
            or self.vit_img_size < 4
        ):
            raise ValueError(f"vit_img_size must be a positive multiple of 4 (the patch size) or None, got {self.vit_img_size!r}")
        for name in ("epochs", "batch_size", "jobs", "threads_per_job"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        known = {m.key for m in STUDY_ROWS}
        if not self.rows or any(r not in known for r in self.rows):
            raise ValueError(f"rows must be a non-empty subset of {sorted(known)}, got {list(self.rows)}")
        if "vit-mha" not in self.rows:
            raise ValueError("rows must include 'vit-mha': it is the baseline every row is compared with")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct ints, got {list(self.seeds)}")
        unknown = [r for r in self.retrofits if r not in RETROFITS]
        if unknown:
            raise ValueError(f"retrofits must be a subset of {sorted(RETROFITS)}, got {list(self.retrofits)}")
        if not 0 < self.finetune_fraction <= 1:
            raise ValueError(f"finetune_fraction must be in (0, 1], got {self.finetune_fraction!r}")
        for name in ("lr", "finetune_lr", "tolerance_points"):
            value = getattr(self, name)
            # nan passed `<= 0`: a nan tolerance failed every retrofit, a nan fine-tune lr named --lr
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")

    @property
    def run_epochs(self) -> int:
        return 1 if self.quick else self.epochs

    @property
    def finetune_epochs(self) -> int:
        """Whole epochs within `finetune_fraction` of the training run's steps (at least one)."""
        return max(1, int(self.run_epochs * self.finetune_fraction))

    def selected(self) -> tuple[StudyRow, ...]:
        """The rows, the pico ViTs at `vit_img_size` (uniform_xs keeps its own input size)."""
        rows = tuple(m for m in STUDY_ROWS if m.key in self.rows)
        if self.vit_img_size is None:
            return rows
        return tuple(dataclasses.replace(m, img_size=self.vit_img_size) if m.img_size is None else m for m in rows)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
