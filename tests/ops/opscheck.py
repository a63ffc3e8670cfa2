"""Shared checks for the operator tests: named comparisons and random inputs."""

from __future__ import annotations

import torch

# bfloat16 keeps 8 bits of mantissa (relative step 2^-8 ~ 0.004); sums over a few dozen keys and a
# final rounding of the output stay within a few of those steps.
BF16_RTOL = 3e-2
BF16_ATOL = 3e-2
# float32 against a float64 reference: accumulated rounding over short sums.
F32_RTOL = 1e-4
F32_ATOL = 1e-5


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float) -> None:
    """Compare `out` to `ref` (cast to out's dtype); the failure message names the quantity."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert out.dtype == ref.dtype or ref.dtype == torch.float64, f"{name}: dtype {out.dtype} vs {ref.dtype}"
    torch.testing.assert_close(
        out.double(), ref.double(), rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{name}: {m}"
    )


def qkv(B, Hq, Hv, N, M, Dk, Dv, dtype=torch.float64, requires_grad=True):
    """Random q [B, Hq, N, Dk], k [B, Hq, M, Dk], v [B, Hv, M, Dv] leaf tensors."""
    q = torch.randn(B, Hq, N, Dk, dtype=torch.float64)
    k = torch.randn(B, Hq, M, Dk, dtype=torch.float64)
    v = torch.randn(B, Hv, M, Dv, dtype=torch.float64)
    return tuple(t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v))


def grads(out: torch.Tensor, inputs, seed_grad: torch.Tensor) -> list:
    """Gradients of <out, seed_grad> with respect to `inputs` (None where an input is None)."""
    present = [x for x in inputs if x is not None]
    got = iter(torch.autograd.grad(out, present, seed_grad.to(out.dtype)))
    return [next(got) if x is not None else None for x in inputs]
