"""ViTALiTy's sparse attention component, used as a training-time regulariser (HPCA 2023).

Softmax on low-precision (fake-quantised, `bits`) q and k; entries below `threshold` are dropped.
Two forms:
- `sparse_attention`: the kept softmax weights (not renormalised) multiply v; added to the Taylor
  output this is the public code's sum of two attention outputs.
- `taylor_residual_attention`: the kept entries of softmax minus the first-order Taylor weights
  multiply v, i.e. only the higher-order terms the Taylor layer misses (what the paper says the
  sparse component regularises). Taylor output plus this residual is softmax attention on the kept
  entries and Taylor attention elsewhere, so dropping it at inference removes only those terms.
Quantisation uses the straight-through estimator so gradients reach q and k. Both are O(N M) and
meant for training only: ViTALiTy's inference runs the linear Taylor part alone. Shapes as
`softmax_attention`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnreuse.ops.linear import TAYLOR_CENTERS, _guard, _centred_keys
from attnreuse.ops._checks import check_eps, check_qkv, check_scale, group_values, ungroup_values

__all__ = ["fake_quant", "sparse_attention", "taylor_residual_attention"]


def fake_quant(x: Tensor, bits: int) -> Tensor:
    """Symmetric per-head quantisation of x [B, H, N, D] to `bits`, straight-through gradient."""
    levels = 2 ** (bits - 1) - 1
    step = x.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12) / levels
    quantised = torch.round(x.detach() / step).clamp_(-levels, levels).mul_(step)
    return x + (quantised - x).detach()


def _check_sparse(threshold: float, bits: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a float in [0, 1), got {threshold!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")


def _quantised_map(q: Tensor, k: Tensor, bits: int, scale: float) -> Tensor:
    """softmax(scale * fq(q) fq(k)^T) in at least float32: [B, Hq, N, M]."""
    scores = (fake_quant(q, bits) * scale) @ fake_quant(k, bits).transpose(-1, -2)
    return torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    threshold: float,
    bits: int = 4,
    scale: float | None = None,
) -> Tensor:
    """q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], v: [B, Hv, M, Dv] -> [B, Hv, N, Dv]."""
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    scale = check_scale(scale, Dk**-0.5)
    _check_sparse(threshold, bits)
    attn = _quantised_map(q, k, bits, scale)
    attn = (attn * (attn >= threshold)).to(q.dtype)
    return ungroup_values(attn @ group_values(v, Hq), Hv)


def taylor_residual_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    threshold: float,
    bits: int = 4,
    scale: float | None = None,
    center: str | None = "tokens",
    eps: float = 1e-6,
) -> Tensor:
    """(mask * (P - T)) v with P the quantised softmax map, mask = P >= threshold and T the
    first-order Taylor weights of `ops.taylor_attention` with the same centring and denominator
    guard. Shapes as `sparse_attention`."""
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    scale = check_scale(scale, Dk**-0.5)
    _check_sparse(threshold, bits)
    if center not in TAYLOR_CENTERS:
        raise ValueError(f"center must be one of {TAYLOR_CENTERS}, got {center!r}")
    eps = check_eps(eps)
    attn = _quantised_map(q, k, bits, scale)
    qa, ka = q.to(attn.dtype), _centred_keys(k.to(attn.dtype), center)
    taylor = (qa * scale) @ ka.transpose(-1, -2) + 1.0  # [B, Hq, N, M]
    taylor = taylor / _guard(taylor.sum(dim=-1, keepdim=True), eps * M)
    residual = ((attn - taylor) * (attn >= threshold)).to(q.dtype)
    return ungroup_values(residual @ group_values(v, Hq), Hv)
