"""Linear-cost attention: ViTALiTy's first-order Taylor attention and the kernelised baselines.

Papers: ViTALiTy (Dass et al., HPCA 2023) for `taylor_attention`; Katharopoulos et al. (ICML 2020,
elu + 1) and EfficientViT (Cai et al., ICCV 2023, ReLU) for `linear_attention`.
Shapes as `softmax_attention`: q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], v: [B, Hv, M, Dv], Hv % Hq == 0.
K^T V is formed first, so time is O(N Dk Dv) and no N x M tensor exists. Literal definitions:
`attnreuse.ops.reference`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnreuse.ops._checks import check_eps, check_qkv, check_scale, group_values, ungroup_values
from attnreuse.ops._precision import accumulation_dtype, autocast_dtype, autocast_inputs
from attnreuse.ops.backend import is_exporting

__all__ = ["TAYLOR_CENTERS", "linear_attention", "taylor_attention"]

TAYLOR_CENTERS = ("tokens", "features", None)
FEATURE_MAPS = ("elu", "relu")


def _guard(denom: Tensor, tiny: float) -> Tensor:
    """Keep |denom| >= tiny, preserving its sign (zero counts as positive)."""
    return torch.where(denom.abs() < tiny, torch.where(denom < 0, -tiny, tiny), denom)


# Rows of q (or k) per chunk of the inference path: its temporaries stay in cache and no tensor
# of N rows is allocated besides the output (fresh large tensors cost page faults on first touch).
CHUNK_BYTES = 4 << 20

_Map = Callable[[Tensor, Tensor], Tensor]  # (chunk [BH, rows, D], scratch) -> features of the chunk


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _kernelised(
    q: Tensor, k: Tensor, v: Tensor, *, q_map: _Map, k_map: _Map, num_const: bool, den_const: float,
    scale: float, tiny: float | None,
) -> Tensor:
    """Inference path of (scale phi_q(q) G + c_v) / (scale phi_q(q) k_sum + c_d), chunked, where
    G = phi_k(k)^T v, k_sum = phi_k(k)^T 1 and c_v = v_sum (when `num_const`) or 0.

    q: [BH, N, Dk], k: [BH, M, Dk], v: [BH, M, Dv] in the accumulation dtype -> [BH, N, Dv].
    Keys, per chunk of rows: features, then G, k_sum, v_sum accumulate. Queries, per block of rows:
    the denominators d (one matrix-vector product; guarded to |d| >= tiny, sign kept, when `tiny`
    is set), then one batched matmul [phi_q / d | 1 / d] @ [scale G ; c_v] written into the output.
    """
    BH, M, Dk = k.shape
    N, Dv = q.shape[1], v.shape[-1]
    dt, dev = q.dtype, q.device
    kv = torch.zeros(BH, Dk, Dv, dtype=dt, device=dev)
    k_sum = torch.zeros(BH, Dk, 1, dtype=dt, device=dev)
    w = torch.zeros(BH, Dk + 1, Dv, dtype=dt, device=dev)  # [scale G ; c_v]
    rows = max(1, min(M, CHUNK_BYTES // (q.element_size() * BH * Dk)))
    scratch = torch.empty(BH * rows * Dk, dtype=dt, device=dev)
    for c0 in range(0, M, rows):
        c1 = min(M, c0 + rows)
        fk = k_map(k[:, c0:c1], scratch[: BH * (c1 - c0) * Dk].view(BH, c1 - c0, Dk))
        vc = v[:, c0:c1]
        kv.baddbmm_(fk.transpose(1, 2), vc)
        k_sum.add_(fk.sum(1).unsqueeze(-1))
        if num_const:
            w[:, Dk].add_(vc.sum(1))
    torch.mul(kv, scale, out=w[:, :Dk])
    k_sum.mul_(scale)
    out = torch.empty(BH, N, Dv, dtype=dt, device=dev)
    per_row = q.element_size() * (2 * Dk + 2)
    rows = max(1, min(N, CHUNK_BYTES // per_row))
    heads = 1 if rows < N else max(1, min(BH, CHUNK_BYTES // (per_row * N)))
    feat = torch.empty(heads * rows * Dk, dtype=dt, device=dev)
    aug = torch.empty(heads * rows * (Dk + 1), dtype=dt, device=dev)
    for b0 in range(0, BH, heads):
        b1 = min(BH, b0 + heads)
        for r0 in range(0, N, rows):
            r1 = min(N, r0 + rows)
            shape = (b1 - b0, r1 - r0)
            fq = q_map(q[b0:b1, r0:r1], feat[: shape[0] * shape[1] * Dk].view(*shape, Dk))
            den = torch.bmm(fq, k_sum[b0:b1]).add_(den_const)  # [heads, rows, 1]
            if tiny is not None:
                den = _guard(den, tiny)
            a = aug[: shape[0] * shape[1] * (Dk + 1)].view(*shape, Dk + 1)
            torch.reciprocal(den, out=a[..., Dk:])
            torch.mul(fq, a[..., Dk:], out=a[..., :Dk])
            torch.bmm(a, w[b0:b1], out=out[b0:b1, r0:r1])
    return out


def _token_centred(q: Tensor, k: Tensor, v: Tensor, *, scale: float) -> Tensor:
    """Inference path of the token-centred form: q [BH, N, Dk], k [BH, M, Dk], v [BH, M, Dv] ->
    [BH, N, Dv] with two matrix products and no loop over queries.

    The centred keys sum to zero over tokens, so the denominator scale q . k_sum + M is M (up to
    the rounding of k_sum, a relative 1e-7 in float32) and Z = (scale q G + v_sum) / M
    = q W + mean_j v_j with W = (scale / M) k_hat^T v. `_kernelised`, which keeps the denominator,
    takes about 20 small operations for the same result; at ViT sizes (N = 197) they cost more
    than the products. Keys are centred CHUNK_BYTES at a time into one scratch buffer (in eager
    mode), so no second [BH, M, Dk] tensor is written at long sequences.
    """
    BH, M, Dk = k.shape
    mean = k.mean(dim=1, keepdim=True)
    rows = None if is_exporting() else max(1, min(M, CHUNK_BYTES // (k.element_size() * BH * Dk)))
    if rows is None or rows >= M:  # traced (no out= writes) or one chunk
        w = torch.bmm((k - mean).transpose(1, 2), v)  # [BH, Dk, Dv]
    else:
        w = torch.zeros(BH, Dk, v.shape[-1], dtype=k.dtype, device=k.device)
        scratch = torch.empty(BH * rows * Dk, dtype=k.dtype, device=k.device)
        for c0 in range(0, M, rows):
            c1 = min(M, c0 + rows)
            k_hat = torch.sub(k[:, c0:c1], mean, out=scratch[: BH * (c1 - c0) * Dk].view(BH, c1 - c0, Dk))
            w.baddbmm_(k_hat.transpose(1, 2), v[:, c0:c1])
    return torch.baddbmm(v.mean(dim=1, keepdim=True), q, w * (scale / M))


def _centred_keys(k: Tensor, center: str | None) -> Tensor:
    """k [..., M, Dk] centred as `taylor_attention`'s `center` says: over tokens (dim -2), over
    each key's features (dim -1), or not at all (None)."""
    if center == "tokens":
        return k - k.mean(dim=-2, keepdim=True)
    if center == "features":
        return k - k.mean(dim=-1, keepdim=True)
    return k


def _identity(x: Tensor, scratch: Tensor) -> Tensor:
    return x


def _center_features(x: Tensor, scratch: Tensor) -> Tensor:
    return torch.sub(x, x.mean(-1, keepdim=True), out=scratch)


def _elu1(x: Tensor, scratch: Tensor) -> Tensor:
    """elu(x) + 1 = exp(min(x, 0)) + max(x, 0) (F.elu itself is several times slower on CPU)."""
    return torch.clamp(x, max=0, out=scratch).exp_().add_(x.clamp(min=0))


def _relu(x: Tensor, scratch: Tensor) -> Tensor:
    return torch.clamp(x, min=0, out=scratch)


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
    stays finite. Low-precision inputs (bf16, or float32 under `torch.autocast`) are computed in
    float32 (k_sum, v_sum and the denominators need it; `attnreuse.ops._precision`) and returned in
    the low dtype.
    """
    cast = autocast_dtype(q) if isinstance(q, Tensor) else None
    if cast is not None:
        q, k, v = autocast_inputs(cast, q, k, v)
        with torch.autocast(q.device.type, enabled=False):
            return taylor_attention(q, k, v, scale=scale, center=center, eps=eps)
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    scale = check_scale(scale, Dk**-0.5)
    if center not in TAYLOR_CENTERS:
        raise ValueError(f"center must be one of {TAYLOR_CENTERS}, got {center!r}")
    eps = check_eps(eps)
    acc = accumulation_dtype(q.dtype)
    qa, ka, va = q.to(acc), k.to(acc), group_values(v, Hq).to(acc)
    # Inference: token centring in two products (eager and exported alike); the other centrings
    # through the chunked path, whose out= writes a tracer cannot see.
    if not _needs_grad(q, k, v) and (center == "tokens" or not is_exporting()):
        flat = [x.reshape(B * Hq, *x.shape[2:]) for x in (qa, ka, va)]
        if center == "tokens":
            out = _token_centred(*flat, scale=scale)
        else:
            k_map = _center_features if center == "features" else _identity
            out = _kernelised(*flat, q_map=_identity, k_map=k_map, num_const=True, den_const=float(M),
                              scale=scale, tiny=eps * M)
        return ungroup_values(out.view(B, Hq, N, -1), Hv).to(q.dtype)
    ka = _centred_keys(ka, center)
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
    Low precision as `taylor_attention`.
    """
    cast = autocast_dtype(q) if isinstance(q, Tensor) else None
    if cast is not None:
        q, k, v = autocast_inputs(cast, q, k, v)
        with torch.autocast(q.device.type, enabled=False):
            return linear_attention(q, k, v, feature_map=feature_map, eps=eps)
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    eps = check_eps(eps)
    acc = accumulation_dtype(q.dtype)
    if not _needs_grad(q, k, v) and not is_exporting():
        flat = [x.to(acc).reshape(B * Hq, *x.shape[2:]) for x in (q, k, group_values(v, Hq))]
        phi_ = _elu1 if feature_map == "elu" else _relu
        out = _kernelised(*flat, q_map=phi_, k_map=phi_, num_const=False, den_const=eps, scale=1.0, tiny=None)
        return ungroup_values(out.view(B, Hq, N, -1), Hv).to(q.dtype)
    phi = (lambda x: F.elu(x) + 1) if feature_map == "elu" else F.relu
    fq, fk = phi(q.to(acc)), phi(k.to(acc))
    kv = fk.transpose(-1, -2) @ group_values(v, Hq).to(acc)  # [B, Hq, Dk, Dvg]
    denom = fq @ fk.sum(dim=-2).unsqueeze(-1) + eps  # [B, Hq, N, 1]
    return ungroup_values((fq @ kv) / denom, Hv).to(q.dtype)
