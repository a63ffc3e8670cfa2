"""The configuration of `attnreuse analyze`: one frozen dataclass, its command line generated from it
(`attnreuse._cli_args`); kept apart from `report` so that building the command line loads no torch."""

from __future__ import annotations

from dataclasses import dataclass

from attnreuse._cli_args import arg

__all__ = ["AnalyzeConfig"]


@dataclass(frozen=True)
class AnalyzeConfig:
    """What to analyse and how much of it: `model` or a train/convert `checkpoint` directory."""

    output: str = arg(help="directory for similarity.json and the heatmaps")
    model: str | None = arg(None, "model name (default with a train/convert directory: its model)")
    model_kwargs: dict = arg(help="keyword arguments (key=value ... or one JSON object) for the model",
                             default_factory=dict)
    checkpoint: str | None = arg(None, "weights: a train/convert output directory or a .safetensors file")
    data: str = arg("digits", "'digits', an ImageFolder directory or torchvision:NAME:ROOT")
    batches: int = arg(2, "validation batches to measure on")
    batch_size: int = arg(32, "images per batch")
    mac_budget: float = arg(0.8, "plan MACs as a fraction of the all-mha model's")
    min_score: float = arg(0.5, "least similarity a suggested change needs")
    head_threshold: float = arg(0.9, "cosine for heads to be grouped onto one map")

    def __post_init__(self) -> None:
        if self.model is None and self.checkpoint is None:
            raise ValueError("give --model NAME or --checkpoint of a train/convert output directory")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {self.model_kwargs!r}")
        for name in ("batches", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 < self.mac_budget <= 1.0:
            raise ValueError(f"mac_budget must be a fraction in (0, 1] of the all-mha MACs, got {self.mac_budget!r}")
        for name in ("min_score", "head_threshold"):
            v = getattr(self, name)
            if not -1.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a similarity in [-1, 1], got {v!r}")
