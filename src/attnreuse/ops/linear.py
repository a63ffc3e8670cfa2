"""Linear-cost attention: ViTALiTy's first-order Taylor attention and the kernelised baselines.

Papers: ViTALiTy (Dass et al., HPCA 2023) for `taylor_attention`; Katharopoulos et al. (ICML 2020,
elu + 1) and EfficientViT (Cai et al., ICCV 2023, ReLU) for `linear_attention`.
Shapes as `softmax_attention`: q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], v: [B, Hv, M, Dv], Hv % Hq == 0.
K^T V is formed first, so time is O(N Dk Dv) and no N x M tensor exists. Literal definitions:
`attnreuse.ops.reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnreuse.ops._checks import check_eps, check_qkv, check_scale, group_values, ungroup_values

__all__ = ["TAYLOR_CENTERS", "linear_attention", "taylor_attention"]

TAYLOR_CENTERS = ("tokens", "features", None)
FEATURE_MAPS = ("elu", "relu")


def _accumulator(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _guard(denom: Tensor, tiny: float) -> Tensor:
    """Keep |denom| >= tiny, preserving its sign (zero counts as positive)."""
    return torch.where(denom.abs() < tiny, torch.where(denom < 0, -tiny, tiny), denom)


def taylor_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    center: str | None = "tokens",
    eps: float = 1e-6,
) -> Tensor:
    """ViTALiTy linear Taylor attention, exp(x) ~ 1 + x with x = scale * q . k_hat.

    Per query/key head (the paper's form, divided through by sqrt(d)):
        k_hat = k - mean over tokens of k            (center="tokens", the paper; softmax-invariant)
        G = k_hat^T v : [Dk, Dv],  k_sum = sum_j k_hat_j,  v_sum = sum_j v_j
        Z = (scale * q G + 1 v_sum^T) / (scale * q k_sum + M)
    center="features" subtracts each key's mean over its own features (the public code's variant,
    which its checkpoints were trained with); center=None uses raw keys.

    The denominator: with token centring k_sum is zero, so it is M up to rounding and cannot
    vanish. With the other centrings it can approach zero when q . k_sum ~ -M / scale; any
    denominator of magnitude below eps * M is replaced by +-eps * M (sign kept), so the output
    stays finite. Low-precision inputs are computed in float32 and returned in their dtype.
    """
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    scale = check_scale(scale, Dk**-0.5)
    if center not in TAYLOR_CENTERS:
        raise ValueError(f"center must be one of {TAYLOR_CENTERS}, got {center!r}")
    eps = check_eps(eps)
    acc = _accumulator(q)
    qa, ka, va = q.to(acc), k.to(acc), group_values(v, Hq).to(acc)
    if center == "tokens":
        ka = ka - ka.mean(dim=-2, keepdim=True)
    elif center == "features":
        ka = ka - ka.mean(dim=-1, keepdim=True)
    kv = ka.transpose(-1, -2) @ va  # [B, Hq, Dk, Dvg]
    k_sum = ka.sum(dim=-2).unsqueeze(-1)  # [B, Hq, Dk, 1]
    v_sum = va.sum(dim=-2, keepdim=True)  # [B, Hq, 1, Dvg]
    qs = qa * scale
    num = torch.baddbmm(
        v_sum.reshape(B * Hq, 1, -1), qs.reshape(B * Hq, N, Dk), kv.reshape(B * Hq, Dk, -1)
    ).view(B, Hq, N, -1)
    denom = _guard(qs @ k_sum + M, eps * M)  # [B, Hq, N, 1]
    return ungroup_values(num / denom, Hv).to(q.dtype)


def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, feature_map: str = "elu", eps: float = 1e-6
) -> Tensor:
    """Kernelised linear attention phi(q) (phi(k)^T v) / (phi(q) phi(k)^T 1 + eps).

    feature_map="elu": phi = elu + 1 (Katharopoulos et al.); "relu": phi = relu (EfficientViT).
    """
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    eps = check_eps(eps)
    acc = _accumulator(q)
    phi = (lambda x: F.elu(x) + 1) if feature_map == "elu" else F.relu
    fq, fk = phi(q.to(acc)), phi(k.to(acc))
    kv = fk.transpose(-1, -2) @ group_values(v, Hq).to(acc)  # [B, Hq, Dk, Dvg]
    denom = fq @ fk.sum(dim=-2).unsqueeze(-1) + eps  # [B, Hq, N, 1]
    return ungroup_values((fq @ kv) / denom, Hv).to(q.dtype)
