"""The settings of the hf jobs as data: one source of truth for the code and the command line
(`attnreuse hf distill` generates its flags from these fields). No torch import here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["EVAL_TIMING", "SCORED_KINDS", "SUGGESTED_KINDS", "DistillConfig"]

# `hf eval`'s speed test: interleaved rounds, timed calls per model over all rounds, torch threads
EVAL_TIMING = {"rounds": 10, "repeats": 30, "threads": 2}
SCORED_KINDS = ("share", "reuse", "skip", "taylor", "kvpool")  # the kinds a measured similarity scores (`hf.analyze.suggest`)
SUGGESTED_KINDS = ("share", "reuse")  # the ones `hf analyze` searches unless --kinds says otherwise


@dataclass(frozen=True)
class DistillConfig:
    """How to distil; each field is also a flag of `attnreuse hf distill` (help in its metadata)."""

    steps: int = field(default=800, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "texts per step (global under torchrun)"})
    lr: float = field(default=1e-4, metadata={"help": "peak AdamW learning rate"})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "linear warm-up steps, then cosine decay; below --steps (None: a tenth of --steps, at most 50)"})
    max_length: int = field(default=128, metadata={"help": "tokens per text (longer texts are truncated; at most the model's positions)"})
    hidden_weight: float = field(default=1.0, metadata={"help": "weight of the per-layer hidden-state MSE"})
    embedding_weight: float = field(default=10.0, metadata={"help": "weight of 1 - cosine of pooled embeddings"})
    relation_weight: float = field(default=0.0, metadata={"help": "weight of the MSE between the batch's pooled-embedding cosine matrices (neighbour structure)"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    seed: int = field(default=0, metadata={"help": "seed of the batch order"})

    @property
    def warmup(self) -> int:
        """The warm-up steps the schedule uses: --warmup-steps, or a tenth of --steps, at most 50."""
        return min(50, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive int, got {value!r}")
        if self.warmup_steps is not None and (isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int)
                                              or not 0 <= self.warmup_steps < self.steps):
            # a warm-up as long as the run never reaches the peak rate and never decays
            raise ValueError(f"--warmup-steps must be an int from 0 to --steps - 1 = {self.steps - 1}, "
                             f"got {self.warmup_steps!r}")
        for name in ("lr", "hidden_weight", "embedding_weight", "relation_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
        if self.hidden_weight + self.embedding_weight + self.relation_weight == 0:  # every step's loss 0: nothing learns
            raise ValueError("--hidden-weight, --embedding-weight and --relation-weight are all 0: the loss would be 0 "
                             "and the student never change; give at least one a weight above 0")
