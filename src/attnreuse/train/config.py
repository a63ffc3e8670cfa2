"""The run configuration of `attnreuse train`: one frozen dataclass, validated on creation and
written as `config.json` beside the checkpoints (a resumed run must match it)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig"]

DISTILL_KINDS = ("soft", "hard")
# Fields that may differ between a run and its resumption without changing the loss curve.
RESUME_FREE = ("output", "resume", "num_workers", "progress", "threads")


def _positive(name: str, value: Any, kind: type = int, allow_zero: bool = False) -> None:
    """Require an int (kind=int) or a real number (kind=float) > 0 (or >= 0 with allow_zero)."""
    types = (int,) if kind is int else (int, float)
    if (
        isinstance(value, bool) or not isinstance(value, types) or not math.isfinite(value) or value < 0
        or (value == 0 and not allow_zero)
    ):
        need = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {need} {kind.__name__}, got {value!r}")


def _fraction(name: str, value: Any, closed: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
    ):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (defaults: a short digits recipe for small ViTs).

    The recipe follows the papers' (AdamW, warm-up + cosine, label smoothing, clipping) through
    timm's factories; `batch_size` is the GLOBAL batch, split evenly over torchrun's processes.
    """

    model: str
    output: str
    data: str = "digits"  # "digits", an ImageFolder directory, or "torchvision:NAME:ROOT"
    model_kwargs: dict = field(default_factory=dict)
    init: str | None = None  # start from the weights of a train/convert output directory
    img_size: int | None = None  # default: the model's pretrained_cfg input size
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 3
    warmup_lr: float = 1e-5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_grad: float | None = 5.0  # max gradient norm; None disables clipping
    drop_path: float = 0.0  # passed to the model as drop_path_rate when > 0
    rand_augment: str | None = None  # a timm RandAugment string such as "rand-m9-n2"
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    ema_decay: float | None = None  # ModelEmaV3 decay, e.g. 0.999; None: no EMA
    teacher: str | None = None  # a train output directory, or a model name with teacher_checkpoint
    teacher_checkpoint: str | None = None
    teacher_kwargs: dict = field(default_factory=dict)
    distill: str = "soft"  # "soft" (KL of T-scaled logits x T^2) or "hard" (DeiT's hard labels)
    distill_temperature: float = 4.0
    distill_weight: float = 0.5  # loss = (1 - w) * CE(labels) + w * distillation term
    seed: int = 0
    limit_train_batches: int | None = None  # stop each epoch after this many steps (smoke tests)
    log_every_steps: int = 1
    num_workers: int = 0
    threads: int | None = None  # torch intra-op threads (default: torch's; 1 on a busy machine)
    progress: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        for name in ("model", "output", "data"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("model_kwargs", "teacher_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict (JSON object), got {getattr(self, name)!r}")
        if self.img_size is not None:
            _positive("img_size", self.img_size)
        for name in ("epochs", "batch_size", "log_every_steps"):
            _positive(name, getattr(self, name))
        _positive("warmup_epochs", self.warmup_epochs, allow_zero=True)
        _positive("num_workers", self.num_workers, allow_zero=True)
        if self.threads is not None:
            _positive("threads", self.threads)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs must be smaller than epochs, got {self.warmup_epochs} >= {self.epochs}"
            )
        for name in ("lr", "distill_temperature"):
            _positive(name, getattr(self, name), float)
        for name in ("min_lr", "warmup_lr", "weight_decay", "mixup", "cutmix"):
            _positive(name, getattr(self, name), float, allow_zero=True)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must not exceed lr, got min_lr={self.min_lr} > lr={self.lr}")
        _fraction("label_smoothing", self.label_smoothing, closed=False)
        _fraction("drop_path", self.drop_path, closed=False)
        _fraction("distill_weight", self.distill_weight)
        if self.clip_grad is not None:
            _positive("clip_grad", self.clip_grad, float)
        if self.ema_decay is not None and (
            isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, float)
            or not 0.0 < self.ema_decay < 1.0
        ):
            raise ValueError(f"ema_decay must be a float in (0, 1) or None, got {self.ema_decay!r}")
        if self.rand_augment is not None and not (
            isinstance(self.rand_augment, str) and self.rand_augment.startswith("rand")
        ):
            raise ValueError(
                f"rand_augment must be a timm RandAugment string such as 'rand-m9-n2', got {self.rand_augment!r}"
            )
        if self.distill not in DISTILL_KINDS:
            raise ValueError(f"distill must be one of {DISTILL_KINDS}, got {self.distill!r}")
        if self.teacher_checkpoint is not None and self.teacher is None:
            raise ValueError("teacher_checkpoint needs teacher (the teacher's model name)")
        if self.limit_train_batches is not None:
            _positive("limit_train_batches", self.limit_train_batches)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(names)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def resume_mismatch(self, other: TrainConfig) -> list[str]:
        """Fields (other than output/progress/workers) in which `other` differs from this run."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUME_FREE and a[k] != b[k]]
