"""Knowledge distillation from a frozen teacher.

- soft (Hinton et al. 2015): KL(softmax(t / T) || softmax(s / T)) * T^2, batch-mean.
- hard (DeiT, Touvron et al. 2021): cross-entropy of the student against the teacher's argmax.
The training loss is (1 - w) * base_loss(s, labels) + w * distillation term.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse.runs import load_model, read_model_spec

__all__ = ["DistillLoss", "distill_term", "load_teacher"]


def distill_term(student: Tensor, teacher: Tensor, kind: str, temperature: float) -> Tensor:
    """student, teacher: [B, num_classes] logits -> scalar distillation loss."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits must have one shape, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if kind == "soft":
        t = temperature
        return F.kl_div(
            F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
            reduction="batchmean", log_target=True,
        ) * (t * t)
    if kind == "hard":
        return F.cross_entropy(student, teacher.argmax(dim=-1))
    raise ValueError(f"distillation kind must be 'soft' or 'hard', got {kind!r}")


class DistillLoss(nn.Module):
    """(1 - weight) * base(student(x), target) + weight * distill_term(student(x), teacher(x))."""

    def __init__(self, base: nn.Module, teacher: nn.Module, kind: str, temperature: float, weight: float):
        super().__init__()
        self.base, self.kind, self.temperature, self.weight = base, kind, temperature, weight
        self.teacher = teacher.eval().requires_grad_(False)

    def forward(self, x: Tensor, student_logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        term = distill_term(student_logits, teacher_logits, self.kind, self.temperature)
        return (1.0 - self.weight) * self.base(student_logits, target) + self.weight * term


def load_teacher(teacher: str, checkpoint: str | None, kwargs: dict) -> nn.Module:
    """A frozen teacher: a train/convert output directory, or a model name plus its checkpoint
    (a .safetensors file or a run directory). Random teacher weights are refused."""
    path = Path(teacher)
    run = path.is_dir() and read_model_spec(path) is not None
    if run and checkpoint is not None:
        raise ValueError(f"--teacher {teacher} is a run directory, which holds the teacher's weights: "
                         "drop --teacher-checkpoint (or give --teacher a model name)")
    if checkpoint is None:
        if run:
            model, _ = load_model(None, kwargs, path, what="teacher checkpoint", kwargs_flag="--teacher-kwargs")
            return model.requires_grad_(False)
        raise ValueError(
            f"teacher {teacher!r} is not an `attnreuse train` output directory; give a model name "
            "with --teacher-checkpoint FILE_OR_DIR (no weights are downloaded)"
        )
    model, _ = load_model(teacher, kwargs, checkpoint, what="teacher checkpoint", kwargs_flag="--teacher-kwargs")
    return model.requires_grad_(False)
