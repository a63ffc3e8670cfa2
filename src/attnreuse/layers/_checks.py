"""Argument checks shared by the layers: errors that name the argument, what it got and what it needs."""

from __future__ import annotations

from torch import Tensor

from attnreuse.ops.backend import symbolic_tracing


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_divides(name: str, value: int, total_name: str, total: int) -> None:
    if total % value != 0:
        raise ValueError(f"{total_name}={total} must be divisible by {name}={value}")


def check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def check_tokens(x: object, dim: int) -> Tensor:
    """Require a floating-point token tensor [B, N, dim] with N >= 1 (not checked on the Proxies
    of a `torch.fx` trace: see `attnreuse.ops.backend.symbolic_tracing`)."""
    if symbolic_tracing():
        return x
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor [B, N, {dim}], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != dim or x.shape[1] == 0:
        raise ValueError(f"x must be [B, N, C] with C={dim} and N >= 1, got shape {tuple(x.shape)}")
    return x
