"""Exact softmax attention with shared maps, executed as FLAT row tiles.

Papers: Reuse Attention / UniForm (one map for every value head), attention map reuse across
layers (`apply_map`), FLAT (ASPLOS 2023: fused Logit-Softmax-Attend over blocks of query rows with
their full score rows, so extra memory grows linearly with N).

Shapes: q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], v: [B, Hv, M, Dv], Hv % Hq == 0, out: [B, Hv, N, Dv].
Value head j uses map j // (Hv // Hq). Hq == Hv is multi-head attention, Hq == 1 is Reuse Attention.
The slow literal definition these are tested against is `attnreuse.ops.reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnreuse.ops._checks import (
    check_bias,
    check_qkv,
    check_scale,
    check_tensor,
    check_same,
    group_values,
    ungroup_values,
)
from attnreuse.ops.backend import get_backend

__all__ = ["apply_map", "attention_map", "auto_tile", "softmax_attention"]

# Scores of one row tile (all batches and heads) are kept near this size: small enough to stay
# in a CPU's L2/L3, large enough that each matmul is efficient.
TILE_BYTES = 2 << 20
MIN_TILE_ROWS = 16


def auto_tile(n_rows: int, n_keys: int, batch_heads: int) -> int:
    """Query rows per tile so that one float32 score tile [batch_heads, rows, n_keys] is ~TILE_BYTES."""
    rows = TILE_BYTES // max(1, 4 * n_keys * batch_heads)
    return int(max(MIN_TILE_ROWS, min(n_rows, rows)))


def _scores(qs: Tensor, kt: Tensor, bias: Tensor | None, start: int, end: int, B: int, Hq: int) -> Tensor:
    """Float32 (or float64) scores of query rows [start, end): [B*Hq, rows, M]."""
    sc = torch.bmm(qs[:, start:end], kt)
    if sc.dtype not in (torch.float32, torch.float64):
        sc = sc.float()
    if bias is not None:
        rows = bias if bias.shape[2] == 1 else bias[:, :, start:end]
        sc.view(B, Hq, end - start, -1).add_(rows)
    return sc


def _forward_tiles(
    q: Tensor, k: Tensor, vg: Tensor, scale: float, bias: Tensor | None, tile: int, want_lse: bool
) -> tuple[Tensor, Tensor | None]:
    """q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], vg: [B, Hq, M, Dvg] -> out [B, Hq, N, Dvg], lse [B*Hq, N].

    Normalisation is deferred to the output (divide N x Dvg, not N x M) and the row maximum is
    subtracted before exp, so no score tile is ever rescaled a second time.
    """
    B, Hq, N, Dk = q.shape
    M, Dvg = k.shape[2], vg.shape[-1]
    BH = B * Hq
    qs = (q * scale).reshape(BH, N, Dk)
    kt = k.reshape(BH, M, Dk).transpose(1, 2)
    vf = vg.reshape(BH, M, Dvg)
    out = torch.empty(BH, N, Dvg, dtype=q.dtype, device=q.device)
    lse = torch.empty(BH, N, dtype=torch.float32, device=q.device) if want_lse else None
    for start in range(0, N, tile):
        end = min(N, start + tile)
        p = _scores(qs, kt, bias, start, end, B, Hq)
        row_max = p.amax(-1, keepdim=True)
        p.sub_(row_max).exp_()
        denom = p.sum(-1, keepdim=True)
        o = torch.bmm(p.to(vf.dtype), vf)
        out[:, start:end] = o.div_(denom)
        if lse is not None:
            lse[:, start:end] = (row_max + denom.log()).squeeze(-1)
    return out.view(B, Hq, N, Dvg), lse


class _TiledAttention(torch.autograd.Function):
    """Row-tiled attention whose backward recomputes each tile's map from the saved log-sum-exp,
    so training memory also grows with N, not N^2."""

    @staticmethod
    def forward(ctx, q, k, vg, bias, scale, tile):  # noqa: D401 - autograd signature
        out, lse = _forward_tiles(q, k, vg, scale, bias, tile, want_lse=True)
        ctx.save_for_backward(q, k, vg, bias, out, lse)
        ctx.scale, ctx.tile = scale, tile
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, vg, bias, out, lse = ctx.saved_tensors
        scale, tile = ctx.scale, ctx.tile
        B, Hq, N, Dk = q.shape
        M, Dvg = k.shape[2], vg.shape[-1]
        BH = B * Hq
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        qs = (q.to(acc) * scale).reshape(BH, N, Dk)
        kf = k.to(acc).reshape(BH, M, Dk)
        vf = vg.to(acc).reshape(BH, M, Dvg)
        do = dout.to(acc).reshape(BH, N, Dvg)
        # D_i = sum_j P_ij dP_ij = <dO_i, O_i>, summed over the value heads sharing the map.
        dsum = (do * out.to(acc).reshape(BH, N, Dvg)).sum(-1, keepdim=True)
        dq = torch.empty(BH, N, Dk, dtype=acc, device=q.device)
        dk = torch.zeros(BH, M, Dk, dtype=acc, device=q.device)
        dv = torch.zeros(BH, M, Dvg, dtype=acc, device=q.device)
        want_dbias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros(bias.shape, dtype=acc, device=q.device) if want_dbias else None
        bias_acc = bias.to(acc) if bias is not None else None
        kt = kf.transpose(1, 2)
        for start in range(0, N, tile):
            end = min(N, start + tile)
            p = _scores(qs, kt, bias_acc, start, end, B, Hq)
            p.sub_(lse[:, start:end, None].to(acc)).exp_()
            do_t = do[:, start:end]
            dv.baddbmm_(p.transpose(1, 2), do_t)
            ds = torch.bmm(do_t, vf.transpose(1, 2)).sub_(dsum[:, start:end]).mul_(p)
            dq[:, start:end] = torch.bmm(ds, kf).mul_(scale)
            dk.baddbmm_(ds.transpose(1, 2), qs[:, start:end])
            if dbias is not None:
                g = ds.view(B, Hq, end - start, M)
                dims = [d for d in (0, 1, 3) if bias.shape[d] == 1]
                if dims:
                    g = g.sum(dims, keepdim=True)
                if bias.shape[2] == 1:
                    dbias.add_(g.sum(2, keepdim=True))
                else:
                    dbias[:, :, start:end] += g
        return (
            dq.view(B, Hq, N, Dk).to(q.dtype),
            dk.view(B, Hq, M, Dk).to(k.dtype),
            dv.view(B, Hq, M, Dvg).to(vg.dtype),
            dbias.to(bias.dtype) if dbias is not None else None,
            None,
            None,
        )


def attention_map(q: Tensor, k: Tensor, *, scale: float | None = None, bias: Tensor | None = None) -> Tensor:
    """The softmax probabilities, materialised: q: [B, H, N, Dk], k: [B, H, M, Dk] -> [B, H, N, M]."""
    check_tensor("q", q, 4)
    check_tensor("k", k, 4)
    check_same(("q", "k"), (q, k))
    B, H, N, Dk = q.shape
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != Dk:
        raise ValueError(
            f"k must be [B, H, M, Dk] = [{B}, {H}, M, {Dk}] to match q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    scale = check_scale(scale, Dk**-0.5)
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    if bias is not None:
        scores = scores + check_bias(bias, q, (B, H, N, k.shape[2]))
    if scores.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.softmax(scores, dim=-1)


def apply_map(attn: Tensor, v: Tensor) -> Tensor:
    """Apply a given map to new values (cross-layer reuse).

    attn: [B, Hq, N, M], v: [B, Hv, M, Dv] with Hv % Hq == 0 -> [B, Hv, N, Dv]; value head j uses
    map j // (Hv // Hq).
    """
    check_tensor("attn", attn, 4)
    check_tensor("v", v, 4)
    check_same(("attn", "v"), (attn, v))
    B, Hq, N, M = attn.shape
    if v.shape[0] != B or v.shape[2] != M or v.shape[1] % Hq != 0:
        raise ValueError(
            f"v must be [B, Hv, M, Dv] with B={B}, M={M} and Hv a multiple of {Hq} to match attn "
            f"{tuple(attn.shape)}, got {tuple(v.shape)}"
        )
    return ungroup_values(torch.matmul(attn, group_values(v, Hq)), v.shape[1])


def _choose(backend: str, Hq: int, Hv: int, Dk: int, Dv: int, return_map: bool) -> str:
    sdpa_ok = Hq == Hv and Dk == Dv and not return_map
    if backend == "sdpa":
        if not sdpa_ok:
            raise ValueError(
                "backend 'sdpa' needs one map per value head (Hq == Hv), Dk == Dv and "
                f"return_map=False; got Hq={Hq}, Hv={Hv}, Dk={Dk}, Dv={Dv}, return_map={return_map}"
            )
        return "sdpa"
    if return_map:
        return "dense"
    if backend == "auto":
        return "sdpa" if sdpa_ok else "tiled"
    return backend


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    bias: Tensor | None = None,
    tile: int | None = None,
    return_map: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Exact attention softmax(scale * q k^T + bias) v with Hq maps shared by Hv value heads.

    q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], v: [B, Hv, M, Dv] -> out [B, Hv, N, Dv]
    (and the map [B, Hq, N, M] when `return_map`). `bias` broadcasts to [B, Hq, N, M]; `scale`
    defaults to Dk ** -0.5; `tile` sets the query rows per FLAT tile (default: `auto_tile`).
    The execution path follows `attnreuse.ops.backend`.
    """
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    scale = check_scale(scale, Dk**-0.5)
    if bias is not None:
        bias = check_bias(bias, q, (B, Hq, N, M))
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int or None, got {tile!r}")
    path = _choose(get_backend(), Hq, Hv, Dk, Dv, return_map)
    if path == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    if path == "dense":
        attn = attention_map(q, k, scale=scale, bias=bias)
        out = apply_map(attn, v)
        return (out, attn) if return_map else out
    vg = group_values(v, Hq)
    rows = tile or auto_tile(N, M, B * Hq)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, bias)
    )
    if needs_grad:
        out = _TiledAttention.apply(q, k, vg, bias, scale, rows)
    else:
        out, _ = _forward_tiles(q, k, vg, scale, bias, rows, want_lse=False)
    return ungroup_values(out, Hv)
