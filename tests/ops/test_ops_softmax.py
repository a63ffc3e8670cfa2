"""Exact attention with shared maps (`softmax_attention`, `attention_map`, `apply_map`): every
backend, forward and backward, against the literal float64 reference."""

import pytest
import torch
from opscheck import BF16_ATOL, BF16_RTOL, F32_ATOL, F32_RTOL, assert_close, grads, qkv

import attnreuse.ops.softmax as softmax_mod
from attnreuse import ops
from attnreuse.measure import measure_peak_bytes
from attnreuse.ops import reference

# B, Hq, Hv, N, M, Dk, Dv, tile, bias shape (None: no bias)
CASES = [
    (1, 1, 8, 37, 37, 16, 16, 8, None),  # Reuse Attention; N not a multiple of the tile
    (2, 2, 4, 33, 20, 8, 12, 7, (1, 2, 33, 20)),  # grouped reuse, N != M, Dk != Dv, per-head bias
    (3, 4, 4, 17, 23, 8, 8, None, (3, 1, 1, 23)),  # multi-head, key bias per batch
    (2, 1, 3, 19, 19, 6, 5, 4, (19, 19)),  # 2-D bias (UniForm's relative position bias)
    (2, 2, 2, 9, 12, 4, 4, 4, (2, 1, 9, 12)),  # multi-head, a bias per batch shared by heads
]
IDS = ["reuse", "grouped-dk!=dv", "mha-keybias", "bias2d", "mha-batchbias"]


def _applies(backend, case):
    B, Hq, Hv, N, M, Dk, Dv = case[:7]
    return backend != "sdpa" or (Hq == Hv and Dk == Dv)


# sdpa cannot express shared maps or Dk != Dv; that it raises there is tested below.
F32_PARAMS = [
    pytest.param(case, backend, id=f"{name}-{backend}")
    for case, name in zip(CASES, IDS)
    for backend in ("tiled", "dense", "auto", "sdpa")
    if _applies(backend, case)
]


def _inputs(case, dtype):
    B, Hq, Hv, N, M, Dk, Dv, tile, bias_shape = case
    q, k, v = qkv(B, Hq, Hv, N, M, Dk, Dv, dtype)
    bias = None
    if bias_shape is not None:
        bias = torch.randn(bias_shape, dtype=torch.float64).to(dtype).requires_grad_()
    return q, k, v, bias, tile


def _check_against_reference(case, backend, dtype, rtol, atol):
    q, k, v, bias, tile = _inputs(case, dtype)
    with ops.use_backend(backend):
        out = ops.softmax_attention(q, k, v, bias=bias, tile=tile)
    inputs64 = [x.detach().double().requires_grad_() if x is not None else None for x in (q, k, v, bias)]
    ref = reference.softmax_attention(*inputs64[:3], bias=inputs64[3])
    assert out.dtype == dtype
    assert_close("out", ref, out, rtol, atol)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    got = grads(out, (q, k, v, bias), seed)
    want = grads(ref, inputs64, seed)
    for name, g, w in zip(("dq", "dk", "dv", "dbias"), got, want):
        if w is not None:
            assert g.dtype == dtype, name
            assert_close(name, w, g, rtol, atol)


@pytest.mark.parametrize("case, backend", F32_PARAMS)
def test_float32_forward_backward(case, backend):
    _check_against_reference(case, backend, torch.float32, F32_RTOL, F32_ATOL)


@pytest.mark.parametrize("case, backend", [p for p in F32_PARAMS if p.values[0][-1] is not None])
def test_every_reference_bias_changes_the_output(case, backend):
    """A bias constant over keys is invisible to softmax; each case's bias varies over keys, so an
    operator that dropped it would fail the reference comparison above. This checks the cases."""
    q, k, v, bias, tile = _inputs(case, torch.float32)
    with torch.no_grad(), ops.use_backend(backend):
        biased = ops.softmax_attention(q, k, v, bias=bias, tile=tile)
        plain = ops.softmax_attention(q, k, v, tile=tile)
    assert (biased - plain).abs().max() > 0.1, "bias: dropping it changes nothing; the case tests nothing"


@pytest.mark.parametrize("backend", ["tiled", "dense", "auto"])
@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_bfloat16_forward_backward(case, backend):
    _check_against_reference(case, backend, torch.bfloat16, BF16_RTOL, BF16_ATOL)


@pytest.mark.parametrize("backend", ["tiled", "dense", "sdpa"])
def test_gradcheck_float64(backend):
    Hv, Dv = (2, 3) if backend == "sdpa" else (4, 2)
    Hq = 2
    q, k, v = qkv(2, Hq, Hv, 5, 4, 3, Dv if backend != "sdpa" else 3)
    bias = torch.randn(1, Hq, 5, 4, dtype=torch.float64, requires_grad=True)
    if backend == "sdpa":
        v = torch.randn(2, Hq, 4, 3, dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, bias):
        with ops.use_backend(backend):
            return ops.softmax_attention(q, k, v, bias=bias, tile=2)

    assert torch.autograd.gradcheck(fn, (q, k, v, bias))


def test_gradcheck_reuse_broadcast_bias():
    q, k, v = qkv(2, 1, 3, 6, 5, 3, 2)
    bias = torch.randn(6, 1, dtype=torch.float64, requires_grad=True)
    fn = lambda q, k, v, b: ops.softmax_attention(q, k, v, bias=b, tile=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, bias))


def test_gradcheck_attention_map_and_apply_map():
    q, k, v = qkv(1, 2, 4, 4, 5, 3, 2)
    bias = torch.randn(2, 1, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, b: ops.attention_map(q, k, bias=b, scale=0.7), (q, k, bias))
    attn = torch.softmax(torch.randn(1, 2, 4, 5, dtype=torch.float64), -1).requires_grad_()
    assert torch.autograd.gradcheck(ops.apply_map, (attn, v))


@pytest.mark.parametrize("backend", ["tiled", "dense", "auto"])
def test_return_map_equals_reference(backend):
    q, k, v = qkv(2, 2, 4, 11, 7, 4, 3, torch.float32, requires_grad=False)
    bias = torch.randn(2, 1, 1, 7)
    with ops.use_backend(backend):
        out, attn = ops.softmax_attention(q, k, v, bias=bias, scale=0.3, return_map=True)
    ref_map = reference.attention_map(q.double(), k.double(), scale=0.3, bias=bias.double())
    assert_close("map", ref_map, attn, F32_RTOL, F32_ATOL)
    assert_close("out", reference.apply_map(ref_map, v.double()), out, F32_RTOL, F32_ATOL)
    assert_close("apply_map", reference.apply_map(ref_map, v.double()), ops.apply_map(attn, v), F32_RTOL, F32_ATOL)


@pytest.mark.parametrize(
    "tile_bytes, tile",
    [(3 * 4 * 9 * 12, None), (4 * 12 * 2, None), (1 << 20, 5)],
    ids=["3-whole-maps-per-tile", "rows-per-tile", "explicit-tile"],
)
def test_every_tile_layout(monkeypatch, tile_bytes, tile):
    """Tiles of several whole maps (not dividing B * Hq), of row blocks, and user-given rows."""
    monkeypatch.setattr(softmax_mod, "TILE_BYTES", tile_bytes)
    case = (2, 4, 8, 9, 12, 5, 3, tile, (2, 4, 9, 12))
    _check_against_reference(case, "tiled", torch.float32, F32_RTOL, F32_ATOL)



@pytest.mark.parametrize("backend", ["tiled", "dense"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("return_map", [False, True])
def test_low_precision_maps_normalise_in_float32(dtype, return_map, backend):
    """A bf16/fp16 tile (and, on the dense backend, the whole map) is normalised in place in its
    own dtype; that must equal normalising a float32 copy of the rounded scores and rounding the
    probabilities (what SDPA's fused kernel and both paths before 2026-12-02 did): almost every
    probability bit for bit, the rest one unit in the last place apart (the row sum is accumulated
    in another order)."""
    g = torch.Generator().manual_seed(3)
    B, Hq, Hv, N, M, Dk, Dv = 2, 1, 4, 70, 70, 16, 8
    q = (torch.randn(B, Hq, N, Dk, generator=g) * 3).to(dtype)  # wide score range: exp's rounding shows
    k = torch.randn(B, Hq, M, Dk, generator=g).to(dtype)
    v = torch.randn(B, Hv, M, Dv, generator=g).to(dtype)
    scores = torch.matmul(q * Dk**-0.5, k.transpose(-1, -2))  # rounded to dtype, as the tile's are
    p = torch.softmax(scores.float(), -1).to(dtype)
    want = torch.matmul(p.unsqueeze(2), v.view(B, Hq, Hv // Hq, M, Dv)).view(B, Hv, N, Dv)
    with ops.use_backend(backend), torch.no_grad():
        got = ops.softmax_attention(q, k, v, tile=16 if backend == "tiled" else None, return_map=return_map)
    ulp = torch.finfo(dtype).eps  # relative spacing of the dtype's values near 1
    if return_map:
        got, attn = got
        torch.testing.assert_close(attn, p, rtol=ulp, atol=0)
        assert (attn == p).float().mean() > 0.99
    torch.testing.assert_close(got, want, rtol=2 * ulp, atol=ulp * want.abs().max().item())
    assert (got == want).float().mean() > 0.95

def test_auto_tile():
    assert ops.auto_tile(10, 10, 1) == 10
    assert ops.auto_tile(1 << 20, 1 << 12, 1) == softmax_mod.TILE_BYTES // (4 << 12)
    assert ops.auto_tile(1 << 20, 1 << 12, 1, 2) == softmax_mod.TILE_BYTES // (2 << 12)  # bf16 scores: twice the rows
    assert softmax_mod._tiles(1, 1 << 12, 1 << 12, None, None, 2)[0] == softmax_mod.TILE_BYTES // (2 << 12)
    assert ops.auto_tile(1 << 20, 1 << 16, 1) == softmax_mod.LONG_TILE_ROWS  # 8 MiB would be 32 rows
    assert ops.auto_tile(100, 1 << 16, 1) == 100
    assert softmax_mod._tiles(1, 1 << 14, 1 << 14, None)[0] == softmax_mod.LONG_TILE_ROWS
    assert softmax_mod._tiles(1, 1 << 14, 1 << 14, None, 1 << 20)[0] == (1 << 20) // (4 << 14)  # a map's tiles
    assert ops.auto_tile(1 << 20, 1 << 30, 8) == softmax_mod.MIN_TILE_ROWS


@pytest.mark.parametrize("backend", ["tiled", "dense", "auto"])
def test_nan_and_inf_propagate_like_pytorch(backend):
    q, k, v = qkv(1, 2, 4, 6, 5, 3, 2, torch.float32, requires_grad=False)
    q[0, 0, 2, 1] = float("nan")  # one query row of map 0
    k[0, 1, 3, 0] = float("inf")  # one key of map 1
    v[0, 3, 4, 1] = float("-inf")
    bias = torch.zeros(6, 5)
    bias[4] = float("-inf")  # a fully masked row: softmax gives NaN
    with ops.use_backend(backend):
        out = ops.softmax_attention(q, k, v, bias=bias)
    ref = reference.softmax_attention(q.double(), k.double(), v.double(), bias=bias.double())
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()
    assert torch.equal(out.isinf(), ref.isinf())
    finite = ref.isfinite()
    assert_close("finite part", ref[finite], out[finite], F32_RTOL, F32_ATOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("poison", ["nan", "inf", "nan+inf", "overflow", "none"])
def test_sdpa_path_gives_nan_rows_for_nan_queries(dtype, poison):
    """PyTorch's fused CPU kernel gives 0 for a NaN query row; the sdpa path must give NaN there
    and only there, also when the quick whole-tensor check sees a non-finite sum for another reason
    (an infinity, a float32 overflow) and when it sees nothing (no NaN)."""
    q, k, v = qkv(2, 3, 3, 7, 5, 4, 4, dtype, requires_grad=False)
    nan_rows = torch.zeros(2, 3, 7, dtype=torch.bool)
    if "nan" in poison:
        q[1, 2, 4, 0] = float("nan")
        nan_rows[1, 2, 4] = True
    if "inf" in poison:
        q[0, 1, 3, 2] = float("inf")  # a row of infinite scores: NaN by the softmax itself
        nan_rows[0, 1, 3] = True
    if poison == "overflow":
        q[0, 0, :, :] = torch.finfo(dtype).max / 4  # finite, but the float32 sum is not
    with ops.use_backend("sdpa"):
        out = ops.softmax_attention(q, k, v)
    assert torch.equal(out.isnan().any(-1), nan_rows)


def test_backend_selects_the_path(monkeypatch):
    calls = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        monkeypatch.setattr(softmax_mod, name, wrapped)

    spy("_forward_tiles", softmax_mod._forward_tiles)
    spy("attention_map", softmax_mod.attention_map)
    spy("_native_attention", softmax_mod._native_attention)
    monkeypatch.setattr(softmax_mod.F, "scaled_dot_product_attention", _spy_sdpa(calls))
    mha = qkv(1, 2, 2, 4, 4, 3, 3, torch.float32, requires_grad=False)
    reuse = qkv(1, 1, 2, 4, 4, 3, 3, torch.float32, requires_grad=False)
    expected = [
        ("auto", mha, False, "sdpa"),
        ("auto", reuse, False, "_forward_tiles"),
        ("auto", mha, True, "attention_map"),  # no gradient, a small map: written in place
        ("tiled", mha, False, "_forward_tiles"),
        ("tiled", reuse, True, "_forward_tiles"),
        ("dense", mha, True, "attention_map"),
        ("dense", reuse, False, "attention_map"),
        ("sdpa", mha, False, "sdpa"),
        ("native", mha, False, "_native_attention"),
        ("native", reuse, True, "_native_attention"),
    ]
    for backend, inputs, return_map, path in expected:
        calls.clear()
        with ops.use_backend(backend):
            ops.softmax_attention(*inputs, return_map=return_map)
        assert calls == [path], (backend, return_map, calls)
    assert ops.get_backend() == "auto"
    # With a gradient recorded, the tiles write a returned map (their backward recomputes each tile).
    calls.clear()
    ops.softmax_attention(*qkv(1, 2, 2, 4, 4, 3, 3, torch.float32, requires_grad=True), return_map=True)
    assert calls == ["_forward_tiles"]
    assert softmax_mod._choose("auto", 2, 2, 3, 3, True, in_place=False) == "tiled"
    assert softmax_mod._choose("auto", 2, 2, 3, 3, True, in_place=True) == "dense"
    # a large float32 map: the native kernel
    big = softmax_mod.NATIVE_MAP_BYTES
    assert softmax_mod._choose("auto", 2, 2, 3, 3, True, in_place=True, native_ok=True, map_bytes=big) == "native"
    assert softmax_mod._choose("auto", 2, 2, 3, 3, True, in_place=True, native_ok=True, map_bytes=big - 1) == "dense"
    assert softmax_mod._choose("auto", 2, 2, 3, 3, True, in_place=True, map_bytes=big) == "dense"
    monkeypatch.setattr(softmax_mod, "NATIVE_MAP_BYTES", 0)
    calls.clear()
    ops.softmax_attention(*mha, return_map=True)
    assert calls == ["_native_attention"]
    calls.clear()
    ops.softmax_attention(*(t.bfloat16() for t in mha), return_map=True)  # not float32: the dense map
    assert calls == ["attention_map"]
    # On a GPU, auto writes a returned map densely (the tile loop is launch-bound there).
    assert softmax_mod._choose("auto", 2, 2, 3, 3, True, on_cpu=False) == "dense"
    assert softmax_mod._choose("tiled", 2, 2, 3, 3, True, on_cpu=False) == "tiled"


def _spy_sdpa(calls):
    real = torch.nn.functional.scaled_dot_product_attention

    def sdpa(*args, **kwargs):
        calls.append("sdpa")
        return real(*args, **kwargs)

    return sdpa


@pytest.mark.parametrize(
    "shape, return_map, needs",
    [((1, 2, 3, 3), False, "Hq == Hv"), ((2, 2, 3, 4), False, "Dk == Dv"), ((2, 2, 3, 3), True, "return_map")],
)
def test_sdpa_backend_raises_where_it_cannot_apply(shape, return_map, needs):
    Hq, Hv, Dk, Dv = shape
    q, k, v = qkv(1, Hq, Hv, 4, 4, Dk, Dv, torch.float32, requires_grad=False)
    with ops.use_backend("sdpa"), pytest.raises(ValueError, match="backend 'sdpa' needs") as err:
        ops.softmax_attention(q, k, v, return_map=return_map)
    assert needs in str(err.value)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_backend("flash")
    assert ops.get_backend() == "auto"


def test_tiled_memory_grows_with_n_not_n_squared(monkeypatch):
    """FLAT: one score tile at a time, forward and backward; the dense map is 4 MiB here."""
    monkeypatch.setattr(softmax_mod, "TILE_BYTES", 256 << 10)
    monkeypatch.setattr(softmax_mod, "LONG_TILE_ROWS", softmax_mod.MIN_TILE_ROWS)
    q, k, v = qkv(1, 1, 2, 1024, 1024, 8, 8, torch.float32)
    map_bytes = 1024 * 1024 * 4
    with torch.no_grad(), ops.use_backend("dense"):
        dense = measure_peak_bytes(lambda: ops.softmax_attention(q, k, v))
    with torch.no_grad(), ops.use_backend("tiled"):
        tiled = measure_peak_bytes(lambda: ops.softmax_attention(q, k, v))
    assert dense >= map_bytes
    assert tiled < map_bytes // 4, tiled
    with ops.use_backend("tiled"):
        out = ops.softmax_attention(q, k, v)
    seed = torch.randn_like(out)
    backward = measure_peak_bytes(lambda: torch.autograd.grad(out, (q, k, v), seed))
    assert backward < map_bytes // 2, backward


def _check_map_out_against_reference(case, dtype, rtol, atol, monkeypatch=None):
    """The tiled kernel that also writes the map: out and map forward; dq, dk, dv, dbias backward
    through both (a later layer applies the map, so its gradient flows back too)."""
    q, k, v, bias, tile = _inputs(case, dtype)
    with ops.use_backend("tiled"):
        out, attn = ops.softmax_attention(q, k, v, bias=bias, tile=tile, scale=0.3, return_map=True)
    inputs64 = [x.detach().double().requires_grad_() if x is not None else None for x in (q, k, v, bias)]
    ref_map = reference.attention_map(inputs64[0], inputs64[1], scale=0.3, bias=inputs64[3])
    ref = reference.apply_map(ref_map, inputs64[2])
    assert out.dtype == dtype and attn.dtype == dtype
    assert_close("out", ref, out, rtol, atol)
    assert_close("map", ref_map, attn, rtol, atol)
    seed_out = torch.randn(ref.shape, dtype=torch.float64)
    seed_map = torch.randn(ref_map.shape, dtype=torch.float64)
    present = [x for x in (q, k, v, bias) if x is not None]
    got = iter(torch.autograd.grad((out, attn), present, (seed_out.to(dtype), seed_map.to(dtype))))
    want = iter(torch.autograd.grad((ref, ref_map), [x for x in inputs64 if x is not None], (seed_out, seed_map)))
    for name, x in zip(("dq", "dk", "dv", "dbias"), (q, k, v, bias)):
        if x is not None:
            g, w = next(got), next(want)
            assert g.dtype == dtype, name
            assert_close(name, w, g, rtol, atol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tiled_map_out_float32_forward_backward(case):
    _check_map_out_against_reference(case, torch.float32, F32_RTOL, F32_ATOL)


@pytest.mark.parametrize("case", CASES[:2], ids=IDS[:2])
def test_tiled_map_out_bfloat16_forward_backward(case):
    _check_map_out_against_reference(case, torch.bfloat16, BF16_RTOL, BF16_ATOL)


@pytest.mark.parametrize("tile_bytes", [3 * 4 * 9 * 12, 4 * 12 * 2], ids=["3-whole-maps-per-tile", "rows-per-tile"])
def test_tiled_map_out_every_tile_layout(monkeypatch, tile_bytes):
    monkeypatch.setattr(softmax_mod, "_map_tile_bytes", lambda: tile_bytes)
    _check_map_out_against_reference((2, 4, 8, 9, 12, 5, 3, None, (2, 4, 9, 12)), torch.float32, F32_RTOL, F32_ATOL)


def test_gradcheck_tiled_map_out_float64():
    """Both outputs used, only the map used, only the output used (the other gradient is None)."""
    q, k, v = qkv(1, 2, 4, 4, 3, 2, 2)
    bias = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, bias):
        with ops.use_backend("tiled"):
            return ops.softmax_attention(q, k, v, bias=bias, tile=2, return_map=True)

    assert torch.autograd.gradcheck(fn, (q, k, v, bias))
    assert torch.autograd.gradcheck(lambda q, k, v, b: fn(q, k, v, b)[1], (q, k, v, bias))
    assert torch.autograd.gradcheck(lambda q, k, v, b: fn(q, k, v, b)[0], (q, k, v, bias))


def test_map_out_memory_is_the_map_plus_one_tile(monkeypatch):
    """Forward without grad: the map and the output, no second [N, M] block, tiled and dense alike
    (dense then computes in place); with a gradient recorded, dense keeps the scores and the
    probabilities alive together while it normalises."""
    q, k, v = qkv(1, 1, 2, 512, 512, 8, 8, torch.float32, requires_grad=False)
    map_bytes = 512 * 512 * 4
    peaks = {}
    for backend in ("tiled", "dense"):
        with torch.no_grad(), ops.use_backend(backend):
            peaks[backend] = measure_peak_bytes(lambda: ops.softmax_attention(q, k, v, return_map=True))
    assert all(map_bytes <= p < 1.25 * map_bytes for p in peaks.values()), peaks
    qg = q.clone().requires_grad_()
    with ops.use_backend("dense"):
        dense = measure_peak_bytes(lambda: ops.softmax_attention(qg, k, v, return_map=True))
    assert dense >= 2 * map_bytes, dense
