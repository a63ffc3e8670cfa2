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
from attnreuse.ops import _native
from attnreuse.ops._precision import autocast_dtype, autocast_inputs
from attnreuse.ops._workspace import map_buffer
from attnreuse.ops.backend import get_backend, is_exporting, tracing

__all__ = ["apply_map", "attention_map", "auto_tile", "native_rows", "softmax_attention"]

# Scores of one tile are kept near this size. A tile is a block of query rows of one batch-head or,
# when whole maps fit, the whole maps of several batch-heads (so a small-N, large-batch call is a
# few batched matmuls, not many tiny ones); every output block [heads, rows, Dv] is then contiguous.
# 8 MiB stays within a server CPU's L3 and keeps the number of parallel regions per call small
# (each costs a thread barrier); measured on 1 and 2 threads, 1-16 MiB tiles ran equally fast.
# Sized in the scores' own bytes: bf16 tiles hold twice the rows, which AMX needs (each tile's
# bf16 A.V repacks V for the matrix unit): Reuse Attention, 8 value heads of 32, 2 threads, Intel
# Xeon with AMX, N = 4096, ran 2.36x SDPA with 512-row tiles and 2.65x with 1024-row ones.
TILE_BYTES = 8 << 20
# With the map returned, each tile's scores live in the map's own block; on one thread only that
# block must stay cached from the score matmul through the softmax to A.V, so it is sized for one
# core's L2 (1 MiB per core on the AMD EPYC it was tuned on: at N = 1000-1500, 8 heads of 64, 1-2
# MiB tiles ran fastest, 128-256 KiB tiles paid per-tile overhead, 8 MiB ones spilled L2). On more
# threads every op of a tile is split between them, and larger tiles pay fewer splits: on 2 threads
# (same CPU, N = 1500 / 3000) 8 MiB tiles ran 1.25x / 1.5x faster than 1 MiB ones.
MAP_TILE_BYTES = 1 << 20
MIN_TILE_ROWS = 16
# Long sequences: at least this many query rows per tile (when N has them), whatever the bytes. Each
# tile's A.V streams all of V ([M, Dv]), and with the few rows an 8 MiB tile holds at long M that
# re-reading decides: Reuse Attention, 8 value heads of 32, 2 threads, AMD EPYC, ran 1.09x faster at
# N = 8192 and 1.07-1.13x at 16384 with 512-row tiles than with 256- / 128-row ones (scores
# 16-32 MiB per tile: still linear in N). Tiles of a returned map keep their own sizing.
LONG_TILE_ROWS = 512

_Tile = tuple[int, int, int, int]  # batch-heads [b0, b1), query rows [r0, r1)


def auto_tile(n_rows: int, n_keys: int, batch_heads: int, itemsize: int = 4) -> int:
    """Query rows per tile so that `batch_heads` score blocks [rows, n_keys] of `itemsize`-byte
    scores side by side come to ~TILE_BYTES (at least MIN_TILE_ROWS rows, and LONG_TILE_ROWS for
    one batch-head; at most n_rows)."""
    rows = TILE_BYTES // max(1, itemsize * n_keys * batch_heads)
    floor = LONG_TILE_ROWS if batch_heads == 1 else MIN_TILE_ROWS
    return int(min(n_rows, max(floor, rows)))


def _tiles(
    BH: int, N: int, M: int, tile: int | None, tile_bytes: int | None = None, itemsize: int = 4
) -> tuple[int, list[_Tile]]:
    """The tiles covering [BH, N] query rows, and the most batch-heads x rows any of them holds.
    When `tile` is None, rows per tile are `auto_tile`'s, or sized so that a score block of
    `itemsize`-byte scores comes to `tile_bytes` when given (a returned map's tiles)."""
    if tile is not None:
        rows = min(N, tile)
    elif tile_bytes is None:
        rows = auto_tile(N, M, 1, itemsize)
    else:
        rows = min(N, max(MIN_TILE_ROWS, tile_bytes // max(1, itemsize * M)))
    budget = TILE_BYTES if tile_bytes is None else tile_bytes
    heads = 1 if rows < N else max(1, min(BH, budget // max(1, itemsize * N * M)))
    tiles = [
        (b0, min(BH, b0 + heads), r0, min(N, r0 + rows))
        for b0 in range(0, BH, heads)
        for r0 in range(0, N, rows)
    ]
    return heads * rows, tiles


def _probs(qs: Tensor, kt: Tensor, bias: Tensor | None, Hq: int, t: _Tile, buf: Tensor) -> Tensor:
    """Softmax probabilities of tile t, [b1 - b0, r1 - r0, M], in qs's dtype.

    qs: [B*Hq, N, Dk] with the scale folded in, kt: [B*Hq, Dk, M], bias: [B|1, Hq|1, N|1, M|1].
    The scores are computed and normalised in place in `buf` (flat scratch of qs's dtype, or the
    tile's own block of a map being written). For bfloat16/float16 scores torch's CPU softmax keeps
    the row max, the exponentials and the row sum in float32 and rounds only the probabilities, the
    same result as normalising a float32 copy and rounding it for A.V (tested), without the two
    conversion passes over the tile (on an AMX Xeon they took a third of the bf16 operator's time).
    """
    b0, b1, r0, r1 = t
    shape = (b1 - b0, r1 - r0, kt.shape[-1])
    p = torch.bmm(qs[b0:b1, r0:r1], kt[b0:b1], out=buf.view(-1)[: shape[0] * shape[1] * shape[2]].view(shape))
    if bias is not None:
        rows = bias if bias.shape[2] == 1 else bias[:, :, r0:r1]
        if rows.shape[0] == 1 and rows.shape[1] == 1:  # one bias for every batch-head (UniForm)
            p.add_(rows[0, 0])
        elif b0 % Hq == 0 and b1 % Hq == 0:  # whole batches: broadcast over [batches, Hq]
            p.view(-1, Hq, *p.shape[1:]).add_(rows if rows.shape[0] == 1 else rows[b0 // Hq : b1 // Hq])
        else:
            for i in range(b0, b1):
                b, h = divmod(i, Hq)
                p[i - b0].add_(rows[b % rows.shape[0], h % rows.shape[1]])
    return torch.ops.aten._softmax.out(p, -1, False, out=p)


def _forward_tiles(
    q: Tensor, k: Tensor, vg: Tensor, scale: float, bias: Tensor | None, tile: int | None, with_map: bool = False
) -> tuple[Tensor, Tensor | None]:
    """FLAT forward: q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], vg: [B, Hq, M, Dvg] -> (out
    [B, Hq, N, Dvg], the map [B, Hq, N, M] in q's dtype when `with_map`, else None).

    Per tile: one batched matmul for the scores, one in-place softmax, one batched matmul written
    straight into the output. Extra memory: one score tile plus the output. With the map, a
    tile's scores are computed, normalised and applied in the tile's own block of
    the map (it is still in cache for A.V), so the map costs one write and no scratch; tiles are
    then sized by `_map_tile_bytes`, and the map comes from `ops._workspace` (reused CPU memory).
    """
    B, Hq, N, Dk = q.shape
    M, Dvg = k.shape[2], vg.shape[-1]
    BH = B * Hq
    qs = (q * scale).reshape(BH, N, Dk)
    kt = k.reshape(BH, M, Dk).transpose(1, 2)
    vf = vg.reshape(BH, M, Dvg)
    size, tiles = _tiles(BH, N, M, tile, _map_tile_bytes() if with_map else None, q.dtype.itemsize)
    attn = map_buffer((BH, N, M), q.dtype, q.device) if with_map else None
    buf = None if with_map else torch.empty(size * M, dtype=q.dtype, device=q.device)
    out = torch.empty(BH, N, Dvg, dtype=q.dtype, device=q.device)
    for t in tiles:
        b0, b1, r0, r1 = t
        p = _probs(qs, kt, bias, Hq, t, attn[b0:b1, r0:r1] if with_map else buf)
        torch.bmm(p, vf[b0:b1], out=out[b0:b1, r0:r1])
    return out.view(B, Hq, N, Dvg), None if attn is None else attn.view(B, Hq, N, M)


def _map_tile_bytes() -> int:
    """Score bytes per tile when the map is written: one core's L2 on one thread, else TILE_BYTES."""
    return MAP_TILE_BYTES if torch.get_num_threads() == 1 else TILE_BYTES


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _TiledAttention(torch.autograd.Function):
    """FLAT row-tiled attention, optionally also returning the map (`with_map`). The backward
    recomputes each tile's probabilities, so training memory also grows with N, not N^2; where
    the map was returned in full precision it is read instead, and its incoming gradient (a later
    layer applied it) joins the score gradient. Gradients accumulate in float32 (float64 for float64)."""

    @staticmethod
    def forward(ctx, q, k, vg, bias, scale, tile, with_map):  # noqa: D401 - autograd signature
        out, attn = _forward_tiles(q, k, vg, scale, bias, tile, with_map)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, k, vg, bias, out, attn)
        ctx.scale, ctx.tile = scale, tile
        return (out, attn) if with_map else out

    @staticmethod
    def backward(ctx, dout, dattn=None):
        q, k, vg, bias, out, attn = ctx.saved_tensors
        scale = ctx.scale
        B, Hq, N, Dk = q.shape
        M, Dvg = k.shape[2], vg.shape[-1]
        BH = B * Hq
        acc = _acc(q.dtype)
        qs = (q.to(acc) * scale).reshape(BH, N, Dk)
        kf = k.to(acc).reshape(BH, M, Dk)
        vf = vg.to(acc).reshape(BH, M, Dvg)
        do = torch.zeros_like(out, dtype=acc) if dout is None else dout.to(acc)
        do = do.reshape(BH, N, Dvg)
        dmap = None if dattn is None else dattn.reshape(BH, N, M)
        saved = attn.reshape(BH, N, M) if attn is not None and attn.dtype == acc else None
        # D_i = sum_j P_ij dP_ij = <dO_i, O_i> (+ <P_i, dMap_i>), over the value heads sharing the map.
        dsum = (do * out.to(acc).reshape(BH, N, Dvg)).sum(-1, keepdim=True)
        dq = torch.empty(BH, N, Dk, dtype=acc, device=q.device)
        dk = torch.zeros(BH, M, Dk, dtype=acc, device=q.device)
        dv = torch.zeros(BH, M, Dvg, dtype=acc, device=q.device)
        want_dbias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros(bias.shape, dtype=acc, device=q.device) if want_dbias else None
        bias_acc = bias.to(acc) if bias is not None else None
        kt = kf.transpose(1, 2)
        size, tiles = _tiles(BH, N, M, ctx.tile, _map_tile_bytes() if attn is not None else None)
        buf = None if saved is not None else torch.empty(size * M, dtype=acc, device=q.device)
        for t in tiles:
            b0, b1, r0, r1 = t
            p = saved[b0:b1, r0:r1] if saved is not None else _probs(qs, kt, bias_acc, Hq, t, buf)
            do_t = do[b0:b1, r0:r1]
            dv[b0:b1].baddbmm_(p.transpose(1, 2), do_t)
            dp = torch.bmm(do_t, vf[b0:b1].transpose(1, 2))
            d_t = dsum[b0:b1, r0:r1]
            if dmap is not None:
                dm = dmap[b0:b1, r0:r1].to(acc)
                dp.add_(dm)
                d_t = d_t + (p * dm).sum(-1, keepdim=True)
            ds = dp.sub_(d_t).mul_(p)
            torch.bmm(ds, kf[b0:b1], out=dq[b0:b1, r0:r1]).mul_(scale)
            dk[b0:b1].baddbmm_(ds.transpose(1, 2), qs[b0:b1, r0:r1])
            if dbias is not None:
                _add_dbias(dbias, ds, Hq, t)
        return (
            dq.view(B, Hq, N, Dk).to(q.dtype),
            dk.view(B, Hq, M, Dk).to(k.dtype),
            dv.view(B, Hq, M, Dvg).to(vg.dtype),
            dbias.to(bias.dtype) if dbias is not None else None,
            None,
            None,
            None,
        )


def _add_dbias(dbias: Tensor, ds: Tensor, Hq: int, t: _Tile) -> None:
    """Accumulate the score gradient ds [b1 - b0, rows, M] of tile t into dbias [B|1, Hq|1, N|1, M|1]."""
    b0, b1, r0, r1 = t
    rows = dbias if dbias.shape[2] == 1 else dbias[:, :, r0:r1]
    for i in range(b0, b1):
        b, h = divmod(i, Hq)
        g = ds[i - b0]
        if rows.shape[2] == 1:
            g = g.sum(0, keepdim=True)
        if rows.shape[3] == 1:
            g = g.sum(1, keepdim=True)
        rows[b % rows.shape[0], h % rows.shape[1]].add_(g)


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
    if bias is not None:
        bias = check_bias(bias, q, (B, H, N, k.shape[2]))
    if _in_place(q, k, bias):
        # Same kernels, written into one pooled buffer: no second [N, M] block, no page faults.
        attn = torch.matmul(q * scale, k.transpose(-1, -2), out=map_buffer((B, H, N, k.shape[2]), q.dtype, q.device))
        if bias is not None:
            attn.add_(bias)
        return torch.ops.aten._softmax.out(attn, -1, False, out=attn)
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias
    if scores.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.softmax(scores, dim=-1)


def _in_place(*tensors: Tensor | None) -> bool:
    """True where the dense map may be computed in place in pooled memory: on the CPU, no gradient
    recorded, no graph being captured (export records the plain form). bf16/fp16 scores are then
    normalised in their own dtype, with float32 statistics (as `_probs` does for a tile): the same
    map as normalising a float32 copy, without the copy's three fresh [B, H, N, M] allocations,
    which made the bf16 dense path 9x slower than SDPA at 3000 tokens (8 heads of 64, Intel Xeon
    with AMX, 2 threads)."""
    q = tensors[0]
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
        and not is_exporting()
        and not tracing()
        and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))
    )


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


def _nan_query_rows(q: Tensor, out: Tensor) -> Tensor:
    """out with a NaN row for every query row of q holding a NaN: torch's fused CPU kernel gives 0
    there, the other paths NaN. q: [B, H, N, Dk], out: [B, H, N, Dv].

    The row-wise test (isnan, any, masked_fill) is three O(N (Dk + Dv)) passes; on the CPU in eager
    mode one summing pass first decides whether q can hold a NaN at all (a NaN or an infinity makes
    the sum non-finite; torch sums bf16 in float32, and a sum that overflows, as fp16's may, only
    sends q on to the row-wise test), which cut the check from 0.23 to 0.03 ms per ViT-S layer in
    bf16 (Intel Xeon, 2 threads; 7% of the bf16 forward). A recorded graph (export, TorchScript, torch
    .compile) and a GPU (no host synchronisation per layer) keep the row-wise test unconditionally.
    """
    eager_cpu = q.device.type == "cpu" and not (is_exporting() or tracing() or torch.compiler.is_compiling())
    if eager_cpu and bool(torch.isfinite(q.detach().sum())):
        return out
    return out.masked_fill(q.isnan().any(-1, keepdim=True), float("nan"))


def _native_ok(q: Tensor, in_place: bool) -> bool:
    """True where the native kernel applies: float32 CPU inference in eager mode (no gradient, no
    graph being captured or compiled). `in_place`: `_in_place` of the call's tensors, which share
    q's dtype (checked)."""
    return in_place and q.dtype == torch.float32 and not torch.compiler.is_compiling()


def _choose(backend: str, Hq: int, Hv: int, Dk: int, Dv: int, return_map: bool, on_cpu: bool = True,
            in_place: bool = False, native_ok: bool = False, map_bytes: int = 0) -> str:
    """The path of one call; `in_place`: the dense map may be written in pooled memory (`_in_place`);
    `native_ok`: the native kernel applies (`_native_ok`); `map_bytes`: the size of the map."""
    sdpa_ok = Hq == Hv and Dk == Dv and not return_map
    if backend == "sdpa":
        if not sdpa_ok:
            raise ValueError(
                "backend 'sdpa' needs one map per value head (Hq == Hv), Dk == Dv and "
                f"return_map=False; got Hq={Hq}, Hv={Hv}, Dk={Dk}, Dv={Dv}, return_map={return_map}"
            )
        return "sdpa"
    if backend == "native":
        if not native_ok:
            raise ValueError(
                "backend 'native' runs float32 inference on the CPU in eager mode (no gradient, no "
                "export or compilation); use 'auto' for this call"
            )
        if not _native.available():
            raise RuntimeError(_native.reason())
        return "native"
    if backend == "auto":
        # a returned map: on a GPU the tile loop is launch-bound; on a CPU without gradient the
        # native kernel writes a large float32 one, else the dense map in place (see ops.backend)
        if return_map and (not on_cpu or in_place):
            native = native_ok and map_bytes >= NATIVE_MAP_BYTES and _native.available()
            return "native" if native else "dense"
        backend = "sdpa" if sdpa_ok else ("dense" if is_exporting() else "tiled")
    if backend == "tiled" and tracing():
        raise ValueError(
            "backend 'tiled' writes into preallocated outputs, which TorchScript tracing / ONNX "
            "export does not record; trace inside attnreuse.ops.exporting() (the dense backend)"
        )
    return backend


# `auto` writes a returned float32 map at least this large with the native kernel, and the kernel
# writes such a map with streaming stores, past the cache: it would not stay cached until a later
# layer reads it, and the stores skip reading each line first. A smaller map stays on the dense
# path, written into the cache, where the next layer finds it. 8 heads of 64, Intel Xeon with AMX,
# 2 threads, float32, four `bench ops --ops sdpa_mha dense_mha native_mha apply_mha --shapes
# whisper` runs: a sharing group's attention (writer, then readers) against as many SDPA layers was
# faster with the native writer in 5 of the 8 cells at N = 1500 and 3000 (72 and 288 MB maps; by
# 0.07-0.21x for a group of 2) and level in 3; at N = 250-1000 (2-32 MB) the dense writer was
# level or ahead (N = 1000: 0.81-0.87x of SDPA for the native writer, 0.87-0.94x for the dense).
NATIVE_MAP_BYTES = 64 << 20


def native_rows(batch_heads: int, n_rows: int, n_keys: int) -> int:
    """Query rows per block of the native kernel: a block's scores [rows, M] in about 2 MiB (one
    core's L2 holds them from the score matmul to A.V; on an Intel Xeon with AMX, 8 heads of 64 at
    N = 3000, 2 threads, 128-192 rows ran at 0.81-0.83x of SDPA and 64-87 rows at 0.74x),
    16-256 rows, and at least two blocks per thread to share out."""
    rows = max(MIN_TILE_ROWS, min(256, (2 << 20) // (4 * max(n_keys, 1))))
    while rows > MIN_TILE_ROWS and batch_heads * -(-n_rows // rows) < 2 * torch.get_num_threads():
        rows //= 2
    return min(rows, n_rows)


def _native_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None, tile: int | None,
                      return_map: bool) -> tuple[Tensor, Tensor | None]:
    """The native kernel's call: out [B, Hv, N, Dv] and the map [B, Hq, N, M] in pooled memory
    when `return_map` (else None)."""
    B, Hq, N, _ = q.shape
    M, Hv = k.shape[2], v.shape[1]
    if bias is not None:
        bias = bias.expand(B, Hq, N, M)
        if M > 1 and bias.stride(3) != 1:  # a bias broadcast along keys: the kernel reads rows
            bias = bias.contiguous()
    attn = map_buffer((B, Hq, N, M), q.dtype, q.device) if return_map else None
    rows = tile if tile is not None else native_rows(B * Hq, N, M)
    stream = attn is not None and attn.numel() * attn.element_size() >= NATIVE_MAP_BYTES
    out = _native.map_attention(q * scale, k, group_values(v, Hq), bias, attn, rows, stream)
    return ungroup_values(out, Hv), attn


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
    The execution path follows `attnreuse.ops.backend`. Low precision (bf16 inputs, or float32
    ones under `torch.autocast`) follows `attnreuse.ops._precision`: products in the input dtype,
    softmax statistics and gradient sums in float32, output in the input (autocast) dtype.
    NaN in, NaN out (IEEE), on every backend: a query row holding a NaN gives a NaN output row
    for each value head reading its map, and leaves the other rows as they are (in float32/64; a
    bfloat16 matmul kernel of some CPUs spreads it to the other rows of its block); a NaN in a key
    makes every row NaN (each row's softmax sums over that key).
    """
    cast = autocast_dtype(q) if isinstance(q, Tensor) else None
    if cast is not None:
        q, k, v, bias = autocast_inputs(cast, q, k, v, bias)
        with torch.autocast(q.device.type, enabled=False):
            return softmax_attention(q, k, v, scale=scale, bias=bias, tile=tile, return_map=return_map)
    B, Hq, Hv, N, M, Dk, Dv = check_qkv(q, k, v)
    scale = check_scale(scale, Dk**-0.5)
    if bias is not None:
        bias = check_bias(bias, q, (B, Hq, N, M))
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int or None, got {tile!r}")
    in_place = _in_place(q, k, v, bias)
    path = _choose(get_backend(), Hq, Hv, Dk, Dv, return_map, q.device.type == "cpu",
                   return_map and in_place, _native_ok(q, in_place), B * Hq * N * M * q.element_size())
    if path == "native":
        out, attn = _native_attention(q, k, v, scale, bias, tile, return_map)
        return (out, attn) if return_map else out
    if path == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        return _nan_query_rows(q, out)
    if path == "dense":
        attn = attention_map(q, k, scale=scale, bias=bias)
        out = apply_map(attn, v)
        return (out, attn) if return_map else out
    vg = group_values(v, Hq)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, bias)
    )
    if needs_grad:
        res = _TiledAttention.apply(q, k, vg, bias, scale, tile, return_map)
        out, attn = res if return_map else (res, None)
    else:
        out, attn = _forward_tiles(q, k, vg, scale, bias, tile, return_map)
    out = ungroup_values(out, Hv)
    return (out, attn) if return_map else out
