"""The run configuration of `attnreuse train`: one frozen dataclass, validated on creation and
written as `config.json` beside the checkpoints (a resumed run must match it)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnreuse._cli_args import arg
from attnreuse._io import read_json

__all__ = ["ConvertConfig", "TrainConfig"]

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

    model: str = arg(help="registered model name (default with --init: the init run's model)")
    output: str = arg(help="run directory (checkpoints, config, metrics, summary)")
    data: str = arg("digits", "'digits', an ImageFolder directory, or 'torchvision:NAME:ROOT'")
    model_kwargs: dict = arg(help="keyword arguments for the model (key=value ... or one JSON object), "
                             "e.g. '{\"attn_plan\": \"reuse\"}'", default_factory=dict)
    init: str | None = arg(None, "start from the weights of a train/convert output directory")
    img_size: int | None = arg(None, "input size (None: the model's pretrained_cfg input size)")
    epochs: int = arg(30, "training epochs")
    batch_size: int = arg(64, "GLOBAL batch size, split evenly over torchrun's processes")
    lr: float = arg(2e-3, "peak AdamW learning rate")
    min_lr: float = arg(1e-5, "cosine schedule floor")
    warmup_epochs: int | None = arg(None, "linear warm-up epochs (None: min(3, epochs - 1))")
    warmup_lr: float = arg(1e-5, "learning rate at the start of the warm-up")
    weight_decay: float = arg(0.05, "AdamW weight decay")
    label_smoothing: float = arg(0.1, "cross-entropy label smoothing")
    clip_grad: float | None = arg(5.0, "max gradient norm (0 or None disables clipping)")
    drop_path: float = arg(0.0, "stochastic depth, passed to the model as drop_path_rate when > 0")
    rand_augment: str | None = arg(None, "a timm RandAugment string such as rand-m9-n2")
    mixup: float = arg(0.0, "mixup alpha (0: off)")
    cutmix: float = arg(0.0, "cutmix alpha (0: off)")
    ema_decay: float | None = arg(None, "keep a ModelEmaV3 with this decay, e.g. 0.999 (None: no EMA)")
    teacher: str | None = arg(None, "teacher: a train output directory, or a model name with teacher_checkpoint")
    teacher_checkpoint: str | None = arg(None, "teacher weights: a .safetensors file or a run directory")
    teacher_kwargs: dict = arg(help="keyword arguments for the teacher (key=value ... or one JSON object)",
                               default_factory=dict)
    distill: str = arg("soft", "'soft' (KL of T-scaled logits x T^2) or 'hard' (DeiT's hard labels)",
                       choices=DISTILL_KINDS)
    distill_temperature: float = arg(4.0, "softmax temperature T of soft distillation")
    distill_weight: float = arg(0.5, "loss = (1 - w) * CE(labels) + w * distillation term")
    seed: int = arg(0, "seed of the weights, data order and augmentation")
    limit_train_batches: int | None = arg(None, "stop each epoch after this many steps (smoke runs)")
    log_every_steps: int = arg(1, "steps between logged training-loss records")
    num_workers: int = arg(0, "data loader worker processes", flags=("--workers", "--num-workers"))
    threads: int | None = arg(None, "torch intra-op threads (None: torch's; 1 avoids spin-waiting on a busy machine)")
    progress: bool = arg(True, "progress bars")
    resume: bool = arg(False, "continue the run in output from its last checkpoint")

    def __post_init__(self) -> None:
        # The defaults that depend on other fields, resolved once here (the command line and the
        # saved config.json read the same value): warm-up min(3, epochs - 1), clip_grad 0 = None.
        if self.warmup_epochs is None and isinstance(self.epochs, int):
            object.__setattr__(self, "warmup_epochs", max(0, min(3, self.epochs - 1)))
        if self.clip_grad == 0 and not isinstance(self.clip_grad, bool):
            object.__setattr__(self, "clip_grad", None)
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32 - 1024:
            # numpy's seed range, less room for timm's random_seed(seed + rank)
            raise ValueError(f"seed must be a non-negative int below 2**32 - 1024, got {self.seed!r}")

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
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise ValueError(f"{path} holds no TrainConfig object; it is damaged or another tool's file")
        return cls.from_dict(saved)

    def resume_mismatch(self, other: TrainConfig) -> list[str]:
        """Fields (other than output/progress/workers) in which `other` differs from this run."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUME_FREE and a[k] != b[k]]


@dataclass(frozen=True)
class ConvertConfig:
    """checkpoint: a train output directory (or a .safetensors file with `model`/`model_kwargs`);
    plan: see `attnreuse.train.convert.parse_target_plan`."""

    checkpoint: str = arg(help="train output directory or .safetensors file")
    plan: str = arg(help="target plan: a kind for every layer (mha, reuse:G, taylor, kvpool:R, ...: any that reads "
                    "no earlier layer); mapshare:G (groups of "
                    "G layers share a map), skipat (SkipAt's middle half), skipat:I,J,... (layer indices); "
                    "or a JSON list of per-layer entries")
    output: str = arg(help="run directory to write (like a train run's)")
    model: str | None = arg(None, "model name (None: the checkpoint run's model)")
    model_kwargs: dict = arg(help="keyword arguments of the source model (key=value ... or one JSON object)",
                             default_factory=dict)
    data: str = arg("digits", "calibration data (as for train)")
    calib_batches: int = arg(4, "calibration batches from the start of the training split")
    batch_size: int = arg(64, "calibration batch size")
    # Phi: relative MSE 0.58 at 150 steps, 0.23 at 500
    fit_steps: int = arg(500, "Adam steps of each calibration regression")
    fit_lr: float = arg(5e-3, "learning rate of the calibration regressions")
    seed: int = arg(0, "seed of the regressions")

    def __post_init__(self) -> None:
        for name in ("checkpoint", "plan", "output", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("calib_batches", "batch_size", "fit_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.fit_lr, (int, float)) or self.fit_lr <= 0:
            raise ValueError(f"fit_lr must be a positive float, got {self.fit_lr!r}")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {self.model_kwargs!r}")
