"""Copying a dense layer's projections into a kind's core (shared by the kinds that keep them)."""

from __future__ import annotations

import torch
from torch import nn

from attnreuse.plan.registry import SourceAttention


def copy_projection(dst: nn.Linear, src: SourceAttention, name: str) -> None:
    """dst <- src's `name` projection ("query", "key" or "value"), weight and bias."""
    with torch.no_grad():
        dst.weight.copy_(src.weights[name])
        if dst.bias is not None:
            bias = src.biases[name]
            dst.bias.copy_(bias if bias is not None else torch.zeros_like(dst.bias))
