"""ViTALiTy's sparse attention component, used as a training-time regulariser (HPCA 2023).

Softmax on low-precision (fake-quantised, `bits`) q and k; entries below `threshold` are dropped;
the remaining weights (not renormalised) multiply v. Quantisation uses the straight-through
estimator so gradients reach q and k. It is O(N M) and meant for training only: ViTALiTy's
inference runs the linear Taylor part alone. Shapes as `softmax_attention`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnreuse.ops._checks import check_qkv, check_scale, group_values, ungroup_values

__all__ = ["fake_quant", "sparse_attention"]


def fake_quant(x: Tensor, bits: int) -> Tensor:
    """Symmetric per-head quantisation of x [B, H, N, D] to `bits`, straight-through gradient."""
    levels = 2 ** (bits - 1) - 1
    step = x.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12) / levels
    quantised = torch.round(x.detach() / step).clamp_(-levels, levels).mul_(step)
    return x + (quantised - x).detach()


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
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a float in [0, 1), got {threshold!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
    scores = (fake_quant(q, bits) * scale) @ fake_quant(k, bits).transpose(-1, -2)
    attn = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
    attn = (attn * (attn >= threshold)).to(q.dtype)
    return ungroup_values(attn @ group_values(v, Hq), Hv)
