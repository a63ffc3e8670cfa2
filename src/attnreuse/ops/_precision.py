"""Which dtype each part of an operator runs in: one rule for every operator.

Softmax attention with low-precision inputs (bfloat16, float16) keeps their dtype in its two
matrix products (where bf16 matrix units do the work: AMX, AVX512-BF16, Arm BF16; elsewhere torch
emulates them), while what needs more bits is held in float32: the softmax statistics (row max,
row sum) and the probabilities until they are rounded for the product with V, and every gradient
accumulator. Taylor and the linear attentions compute in float32 throughout and round only their
output: k_sum, v_sum and the denominators need it, and their products are O(N d^2), not O(N^2 d).
float64 stays float64 (the reference tests).

Under `torch.autocast` an operator behaves like PyTorch's own SDPA there: its floating inputs
(float64 excepted, as autocast leaves them) are cast to the autocast dtype and the operator runs
its low-precision path with autocast off inside, so its explicit accumulators and preallocated
outputs are honoured rather than silently overridden (a write into a float32 `out=` buffer would
otherwise keep the whole product in float32 while returning as if autocast applied).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["accumulation_dtype", "autocast_dtype", "autocast_inputs"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, else float32: the dtype of sums, statistics and gradients."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype `torch.autocast` casts to on x's device while it is enabled there, else None."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def autocast_inputs(dtype: torch.dtype, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Cast each floating tensor that autocast would cast (not float64) to `dtype`; None stays None."""
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype not in (torch.float64, dtype) else t
        for t in tensors
    )
