"""NaN in, NaN out: a query row holding a NaN gives a NaN output row on every backend (torch's
fused SDPA kernel alone would give 0.0 there), and the other rows are unchanged."""

import pytest
import torch
from opscheck import BF16_ATOL, BF16_RTOL, F32_ATOL, F32_RTOL, assert_close, qkv

from attnreuse import ops
from attnreuse.ops import reference

TOL = {torch.float32: (F32_RTOL, F32_ATOL), torch.bfloat16: (BF16_RTOL, BF16_ATOL)}


# (Hq, Hv, N, bias): N = 4 without a bias is where torch's CPU flash kernel gave 0.0
SHAPES = [(2, 2, 4, False), (2, 2, 4, True), (2, 2, 70, False), (1, 3, 9, False)]


# sdpa cannot share one map between value heads, native runs float32 only (that they raise is
# tested in test_ops_softmax)
PARAMS = [
    pytest.param(s, b, d, id=f"Hq{s[0]}-Hv{s[1]}-N{s[2]}-bias{s[3]}-{b}-{d}")
    for s in SHAPES for b in ops.BACKENDS for d in TOL
    if (b != "sdpa" or s[0] == s[1]) and (b != "native" or d == torch.float32)
]


@pytest.mark.parametrize("shape, backend, dtype", PARAMS)
def test_a_nan_query_row_gives_a_nan_output_row(shape, backend, dtype):
    Hq, Hv, N, with_bias = shape
    q, k, v = qkv(2, Hq, Hv, N, N, 8, 8, dtype, requires_grad=False)
    bias = torch.randn(1, 1, N, N, dtype=dtype) if with_bias else None
    q[1, 0, 2, 3] = float("nan")  # one entry of row 2 of map 0 in batch 1
    with ops.use_backend(backend):
        out = ops.softmax_attention(q, k, v, bias=bias)
    ref = reference.softmax_attention(q.double(), k.double(), v.double(), bias=None if bias is None else bias.double())
    nan_rows = ref.isnan().all(-1)
    assert nan_rows.sum() == Hv // Hq, "reference: one NaN row per value head reading map 0"
    assert out[nan_rows].isnan().all(), f"{backend}: a NaN query row must be NaN in every channel"
    got = out.isnan().any(-1)
    if dtype == torch.bfloat16:
        # some CPUs' bfloat16 matmul kernels spread a NaN to the other rows of its block (seen with
        # torch 2.11 on an H200 host's CPU, tiled and dense alike): only NaN -> NaN is promised there
        clean = ~got
    else:
        assert torch.equal(got, nan_rows), f"{backend}: NaN rows {got.nonzero().tolist()}"
        clean = ~nan_rows
    assert_close("clean rows", ref[clean], out[clean], *TOL[dtype])


@pytest.mark.parametrize("backend", ops.BACKENDS)
def test_a_nan_key_makes_every_row_of_its_map_nan(backend):
    q, k, v = qkv(1, 2, 2, 4, 4, 8, 8, torch.float32, requires_grad=False)
    k[0, 0, 1, 2] = float("nan")
    with ops.use_backend(backend):
        out = ops.softmax_attention(q, k, v)
    assert out[0, 0].isnan().all(), backend
    assert out[0, 1].isfinite().all(), backend
