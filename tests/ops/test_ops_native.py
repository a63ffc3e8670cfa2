"""The native CPU kernel (`ops/native/map_attention.cpp`, the `native` backend and `auto`'s writer of
a returned float32 map) against the literal float64 reference, and what happens where it cannot
run or could not be built."""

import pytest
import torch
from opscheck import F32_ATOL, F32_RTOL, assert_close, qkv

import attnreuse.ops.softmax as softmax_mod
from attnreuse import ops
from attnreuse.ops import _native, reference

# B, Hq, Hv, N, M, Dk, Dv, bias shape (None: no bias)
CASES = [
    (1, 8, 8, 70, 70, 16, 16, None),  # multi-head; rows not a multiple of the vector width
    (1, 1, 8, 37, 37, 16, 16, (37, 37)),  # Reuse Attention: one map for 8 value heads, 2-D bias
    (2, 2, 4, 33, 20, 8, 12, (1, 2, 33, 20)),  # grouped values, N != M, Dk != Dv, per-head bias
    (3, 4, 4, 17, 300, 8, 8, (3, 1, 1, 300)),  # key padding bias per batch, long rows
    (2, 2, 2, 9, 12, 4, 4, (2, 2, 9, 1)),  # a bias broadcast along keys (copied for the kernel)
]
IDS = ["mha", "reuse-bias2d", "grouped", "keybias-long", "rowbias"]


@pytest.fixture(autouse=True)
def _kernel():
    if not _native.available():
        pytest.fail(_native.reason())  # the tests' machine has a compiler: a failed build is a bug


def _inputs(case, seed=0):
    torch.manual_seed(seed)
    B, Hq, Hv, N, M, Dk, Dv, bias_shape = case
    q, k, v = qkv(B, Hq, Hv, N, M, Dk, Dv, torch.float32, requires_grad=False)
    bias = None if bias_shape is None else torch.randn(bias_shape)
    return q, k, v, bias


@pytest.mark.parametrize("stream_bytes", [0, 1 << 40], ids=["streamed", "cached"])
@pytest.mark.parametrize("tile", [None, 1, 5, 1000])
@pytest.mark.parametrize("return_map", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_native_matches_the_reference(monkeypatch, case, return_map, tile, stream_bytes):
    """Rows of 37, 20, 300 and 12 keys start off the streaming stores' alignment: both store paths
    write their unaligned heads and tails."""
    monkeypatch.setattr(softmax_mod, "NATIVE_MAP_BYTES", stream_bytes)
    q, k, v, bias = _inputs(case)
    with ops.use_backend("native"):
        res = ops.softmax_attention(q, k, v, bias=bias, scale=0.4, tile=tile, return_map=return_map)
    out, attn = res if return_map else (res, None)
    ref_map = reference.attention_map(q.double(), k.double(), scale=0.4, bias=None if bias is None else bias.double())
    assert out.dtype == torch.float32
    assert_close("out", reference.apply_map(ref_map, v.double()), out, F32_RTOL, F32_ATOL)
    if return_map:
        assert attn.is_contiguous()
        assert_close("map", ref_map, attn, F32_RTOL, F32_ATOL)


def test_auto_writes_a_large_returned_float32_map_natively(monkeypatch):
    monkeypatch.setattr(softmax_mod, "NATIVE_MAP_BYTES", 3 * 4 * 17 * 300 * 4)  # this map's bytes
    calls = []
    real = softmax_mod._native_attention
    monkeypatch.setattr(softmax_mod, "_native_attention", lambda *a: calls.append(1) or real(*a))
    q, k, v, bias = _inputs(CASES[3])
    out, attn = ops.softmax_attention(q, k, v, bias=bias, return_map=True)
    assert calls == [1]
    with ops.use_backend("dense"):
        want_out, want_map = ops.softmax_attention(q, k, v, bias=bias, return_map=True)
    assert_close("map", want_map, attn, F32_RTOL, F32_ATOL)
    assert_close("out", want_out, out, F32_RTOL, F32_ATOL)


def test_masks_large_scores_and_non_contiguous_inputs():
    torch.manual_seed(1)
    q, k, v = qkv(2, 3, 3, 40, 50, 8, 8, torch.float32, requires_grad=False)
    q = (30 * q).transpose(-1, -2).contiguous().transpose(-1, -2)  # scores of +-500: exp overflows without the max
    k = k[:, :, torch.arange(50).flip(0)]  # a gathered copy ...
    v = v.transpose(1, 2).contiguous().transpose(1, 2)  # ... and a strided view
    bias = torch.zeros(2, 1, 1, 50)
    bias[0, ..., 30:] = float("-inf")  # batch 0: the last 20 keys masked out
    with ops.use_backend("native"):
        out, attn = ops.softmax_attention(q, k, v, bias=bias, return_map=True)
    ref_map = reference.attention_map(q.double(), k.double(), bias=bias.double())
    assert_close("map", ref_map, attn, F32_RTOL, F32_ATOL)
    assert_close("out", reference.apply_map(ref_map, v.double()), out, F32_RTOL, 1e-4)
    assert (attn[0, ..., 30:] == 0).all(), "a masked key's probability is exactly 0"


def test_a_fully_masked_row_is_nan_as_in_torch_softmax():
    q, k, v = qkv(1, 2, 2, 6, 6, 4, 4, torch.float32, requires_grad=False)
    bias = torch.zeros(1, 1, 6, 6)
    bias[..., 2, :] = float("-inf")
    with ops.use_backend("native"):
        out, attn = ops.softmax_attention(q, k, v, bias=bias, return_map=True)
    with ops.use_backend("dense"):
        want_out, want_map = ops.softmax_attention(q, k, v, bias=bias, return_map=True)
    torch.testing.assert_close(attn, want_map, equal_nan=True)
    torch.testing.assert_close(out, want_out, equal_nan=True)
    assert attn[:, :, 2].isnan().all() and attn[:, :, 3].isfinite().all()


def test_the_result_does_not_depend_on_the_thread_count():
    q, k, v, bias = _inputs(CASES[0])
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with ops.use_backend("native"):
                results.append(ops.softmax_attention(q, k, v, bias=bias, return_map=True))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("what, make", [
    ("a gradient", lambda: qkv(1, 2, 2, 4, 4, 3, 3, torch.float32)),
    ("bfloat16", lambda: qkv(1, 2, 2, 4, 4, 3, 3, torch.bfloat16, requires_grad=False)),
    ("float64", lambda: qkv(1, 2, 2, 4, 4, 3, 3, torch.float64, requires_grad=False)),
])
def test_native_backend_raises_where_it_cannot_run(what, make):
    with ops.use_backend("native"), pytest.raises(ValueError, match="backend 'native' runs float32 inference"):
        ops.softmax_attention(*make(), return_map=True)


def test_native_rows():
    assert softmax_mod.native_rows(8, 3000, 3000) == (2 << 20) // (4 * 3000)  # ~2 MiB of scores
    assert softmax_mod.native_rows(8, 50, 50) == 50  # never more rows than the map has
    assert softmax_mod.native_rows(1, 4096, 64) == 256
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert softmax_mod.native_rows(1, 64, 64) == 16  # four blocks to share between 2 threads
    finally:
        torch.set_num_threads(threads)


def test_a_failed_build_is_named_and_auto_keeps_the_dense_path(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'attnreuse_native_avx512'\nc++: not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(_native, "_loaded", False)
    monkeypatch.setattr(_native, "_error", None)
    assert not _native.available()
    why = _native.reason()
    assert "needs a C++ compiler and ninja" in why and "Error building extension" in why and "\n" not in why
    q, k, v = qkv(1, 2, 2, 5, 5, 3, 3, torch.float32, requires_grad=False)
    with ops.use_backend("native"), pytest.raises(RuntimeError, match="could not be built"):
        ops.softmax_attention(q, k, v)
    monkeypatch.setattr(softmax_mod, "NATIVE_MAP_BYTES", 0)
    out, attn = ops.softmax_attention(q, k, v, return_map=True)  # auto: the dense map
    assert_close("map", reference.attention_map(q.double(), k.double()), attn, F32_RTOL, F32_ATOL)


def test_runs_under_inference_mode_on_every_thread():
    """The worker threads take the caller's inference mode (thread-local): their writes into the
    output and scratch tensors made under it are allowed."""
    q, k, v, bias = _inputs(CASES[0])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.inference_mode(), ops.use_backend("native"):
            out, attn = ops.softmax_attention(q, k, v, bias=bias, return_map=True)
    finally:
        torch.set_num_threads(threads)
    ref_map = reference.attention_map(q.double(), k.double(), bias=bias)
    assert_close("map", ref_map, attn, F32_RTOL, F32_ATOL)


def test_the_command_line_prints_the_build_notice(capsys, monkeypatch):
    """The build (or why it failed) is logged at INFO on the `attnreuse` logger; `attnreuse`
    commands show it on stderr, as one line per notice (an in-process command run by an earlier
    test may have added the handler already: the logger starts bare here)."""
    import logging

    from attnreuse import cli

    log = logging.getLogger("attnreuse")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "level", logging.NOTSET)
    handler = cli._notices_to_stderr()
    assert handler is not None and log.handlers == [handler]
    log.info("building attnreuse's native CPU kernel for %s (once per machine, 10-40 s)", "AVX512")
    assert capsys.readouterr().err == "attnreuse: building attnreuse's native CPU kernel for AVX512 (once per machine, 10-40 s)\n"
    assert cli._notices_to_stderr() is None  # once
