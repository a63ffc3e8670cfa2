"""Literal, slow definitions of every operator: the truth the fast paths are tested against.

Each loops over value heads and builds the quantities exactly as the papers write them. They run
in whatever dtype they are given; tests call them in float64. No validation, no tiling, no tricks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "apply_map",
    "attention_map",
    "fake_quant",
    "linear_attention",
    "softmax_attention",
    "sparse_attention",
    "taylor_attention",
    "taylor_residual_attention",
]


def attention_map(q: Tensor, k: Tensor, *, scale: float | None = None, bias: Tensor | None = None) -> Tensor:
    """softmax(scale * q k^T + bias): q [B, H, N, Dk], k [B, H, M, Dk] -> [B, H, N, M]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = scale * (q @ k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1)


def apply_map(attn: Tensor, v: Tensor) -> Tensor:
    """Value head j of v [B, Hv, M, Dv] is weighted by map j // (Hv // Hq) of attn [B, Hq, N, M]."""
    r = v.shape[1] // attn.shape[1]
    return torch.stack([attn[:, j // r] @ v[:, j] for j in range(v.shape[1])], dim=1)


def softmax_attention(q, k, v, *, scale=None, bias=None):
    """Multi-head (Hq == Hv), Reuse (Hq == 1) or grouped-reuse softmax attention."""
    return apply_map(attention_map(q, k, scale=scale, bias=bias), v)


def taylor_attention(q, k, v, *, scale=None, center="tokens", eps=1e-6):
    """ViTALiTy (HPCA 2023): softmax's exp(x) replaced by 1 + x, x = scale * q . k_hat.

    Z_i = sum_j (1 + scale q_i.k_hat_j) v_j / sum_j (1 + scale q_i.k_hat_j), with k_hat the keys
    centred over tokens (the paper) or over their own features (the public code), or not at all.
    A denominator smaller than eps * M in magnitude is replaced by +-eps * M.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if center == "tokens":
        k = k - k.mean(dim=-2, keepdim=True)
    elif center == "features":
        k = k - k.mean(dim=-1, keepdim=True)
    weights = 1 + scale * (q @ k.transpose(-1, -2))  # [B, Hq, N, M]
    denom = weights.sum(-1, keepdim=True)
    tiny = eps * k.shape[-2]
    denom = torch.where(denom.abs() < tiny, torch.where(denom < 0, -tiny, tiny), denom)
    return apply_map(weights / denom, v)


def linear_attention(q, k, v, *, feature_map="elu", eps=1e-6):
    """Kernelised attention phi(q) phi(k)^T v / phi(q) phi(k)^T 1 with phi = elu + 1 or relu."""
    phi = (lambda x: F.elu(x) + 1) if feature_map == "elu" else F.relu
    weights = phi(q) @ phi(k).transpose(-1, -2)  # [B, Hq, N, M]
    return apply_map(weights / (weights.sum(-1, keepdim=True) + eps), v)


def fake_quant(x: Tensor, bits: int) -> Tensor:
    """Symmetric per-head quantisation of x [B, H, N, D]: round(x / s) * s, s = max|x| / (2^(bits-1) - 1).

    The gradient is the straight-through estimator's (identity), which is how it trains.
    """
    levels = 2 ** (bits - 1) - 1
    step = x.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12) / levels
    quantised = torch.round(x.detach() / step).clamp(-levels, levels) * step
    return x + (quantised - x).detach()


def sparse_attention(q, k, v, *, threshold, bits=4, scale=None):
    """ViTALiTy's sparse component: softmax of quantised q, k; entries below threshold dropped; times v."""
    attn = attention_map(fake_quant(q, bits), fake_quant(k, bits), scale=scale)
    return apply_map(attn * (attn >= threshold), v)


def taylor_residual_attention(q, k, v, *, threshold, bits=4, scale=None, center="tokens", eps=1e-6):
    """The higher-order part of softmax the Taylor layer misses, on the entries the quantised
    softmax keeps: ((P - T) * (P >= threshold)) v, P = softmax of quantised q, k, T the Taylor weights."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = attention_map(fake_quant(q, bits), fake_quant(k, bits), scale=scale)
    if center == "tokens":
        k = k - k.mean(dim=-2, keepdim=True)
    elif center == "features":
        k = k - k.mean(dim=-1, keepdim=True)
    weights = 1 + scale * (q @ k.transpose(-1, -2))
    denom = weights.sum(-1, keepdim=True)
    tiny = eps * k.shape[-2]
    denom = torch.where(denom.abs() < tiny, torch.where(denom < 0, -tiny, tiny), denom)
    return apply_map((attn - weights / denom) * (attn >= threshold), v)
