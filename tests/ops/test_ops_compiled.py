"""The compiled softmax pass (`attnreuse.ops.compiled`) against PyTorch's softmax and the float64
reference; how it is built, cached, refused and turned off. Tests that need the kernel itself skip
where this machine cannot build it (no C compiler, PyTorch without OpenMP), and say why."""

from __future__ import annotations

import math
import os

import pytest
import torch
from opscheck import F32_ATOL, F32_RTOL, assert_close, grads, qkv

from attnreuse import ops
from attnreuse.ops import compiled, reference


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A kernel state that looks again, with its cache in tmp_path; the real state afterwards."""
    monkeypatch.setenv("ATTNREUSE_CACHE_DIR", str(tmp_path))
    compiled._reset()
    yield tmp_path
    compiled._reset()


def _need_kernel() -> None:
    state = compiled.status()
    if not state.startswith("built"):
        pytest.skip(f"compiled kernel not available here: {state}")


def _rows(scores: torch.Tensor, normalise: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = scores.clone()
    inv = compiled.softmax_rows(out, normalise=normalise)
    assert inv is not False, "the kernel should have run"
    return out, inv


# rows x cols: one column, odd widths (vector tails), a block big enough to split over threads
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 33), (64, 1000), (2, 3, 129)], ids=str)
@pytest.mark.parametrize("normalise", [True, False], ids=["normalised", "deferred"])
def test_softmax_rows_matches_the_float64_softmax(shape, normalise):
    _need_kernel()
    scores = torch.randn(*shape) * 12
    p, inv = _rows(scores, normalise)
    if not normalise:
        assert inv.shape == (*shape[:-1], 1)
        p = p * inv
    assert_close("softmax rows", torch.softmax(scores.double(), -1), p, rtol=1e-5, atol=1e-7)


def test_the_exponential_is_accurate_over_float32_range():
    _need_kernel()
    x = torch.linspace(-87.0, 0.0, 200_001)
    row = torch.cat([x, torch.zeros(1)])  # row max 0: the kernel writes exp(x) itself
    p, _ = _rows(row[None], normalise=False)
    exact = row.double().exp()
    rel = ((p[0].double() - exact).abs() / exact).max().item()
    assert rel < 1e-6, f"exp relative error {rel:.2e}"


def test_ieee_cases_are_those_of_torch_softmax():
    _need_kernel()
    inf, nan = math.inf, math.nan
    scores = torch.tensor([
        [0.0, -inf, 1.0, -200.0],  # -inf and far-below-max scores get probability 0
        [-inf, -inf, -inf, -inf],  # a fully masked row is NaN
        [1.0, nan, 2.0, 3.0],  # a NaN score makes its row NaN
        [1e30, 1e30, -1e30, 0.0],  # huge finite scores
    ])
    expected = torch.softmax(scores, -1)  # float32, where exp(-201) is 0
    for normalise in (True, False):
        p, inv = _rows(scores, normalise)
        if inv is not None:
            p = p * inv
        torch.testing.assert_close(p, expected, equal_nan=True, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("return_map", [False, True], ids=["out", "out+map"])
@pytest.mark.parametrize("shape", [(2, 1, 8, 300, 20), (1, 4, 4, 97, 97), (3, 2, 6, 40, 55)], ids=str)
def test_tiled_attention_with_and_without_the_kernel(shape, return_map):
    """Same result with the kernel on (deferred normalisation, or the normalised map) and off,
    both within float32 rounding of the float64 reference; gradients too (the backward's
    recomputed tiles go through the kernel)."""
    _need_kernel()
    B, Hq, Hv, N, M = shape
    q, k, v = qkv(B, Hq, Hv, N, M, 16, 8, torch.float32)
    bias = torch.randn(1, 1, N, M)
    ref = reference.softmax_attention(q.double(), k.double(), v.double(), bias=bias.double())
    seed = torch.randn(ref.shape)
    results = {}
    for on in (True, False):
        with compiled.use_compiled(on), ops.use_backend("tiled"):
            res = ops.softmax_attention(q, k, v, bias=bias, tile=32, return_map=return_map)
            out = res[0] if return_map else res
            results[on] = (out, grads(out, (q, k, v), seed))
        assert_close(f"out, kernel {'on' if on else 'off'}", ref, out, F32_RTOL, F32_ATOL)
        if return_map:
            assert_close("map", reference.attention_map(q.double(), k.double(), bias=bias.double()), res[1],
                         F32_RTOL, F32_ATOL)
    for name, a, b in zip(("dq", "dk", "dv"), results[True][1], results[False][1]):
        assert_close(name, b.double(), a, F32_RTOL, F32_ATOL)


def test_off_where_it_does_not_apply():
    scores = torch.randn(4, 8, dtype=torch.float64)
    assert compiled.softmax_rows(scores, normalise=True) is False  # float64 keeps PyTorch's path
    assert compiled.softmax_rows(torch.randn(8, 4).t(), normalise=True) is False  # not contiguous
    with compiled.use_compiled(False):
        assert compiled.softmax_rows(torch.randn(4, 8), normalise=True) is False
        assert compiled.status() == "off: use_compiled(False)"


def test_environment_switch_turns_it_off(fresh, monkeypatch):
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    assert compiled.status() == f"off: {compiled.ENV_SWITCH}=0"
    assert not any(fresh.iterdir()), "nothing is built when switched off"
    q, k, v = qkv(1, 1, 4, 50, 50, 8, 8, torch.float32, requires_grad=False)
    with ops.use_backend("tiled"):
        out = ops.softmax_attention(q, k, v)
    assert_close("out", reference.softmax_attention(q.double(), k.double(), v.double()), out, F32_RTOL, F32_ATOL)


def test_a_failed_build_falls_back_and_says_why(fresh, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always exits 1
    state = compiled.status()
    assert state.startswith("off: build failed (false exited 1"), state
    assert not list(fresh.rglob("*.so")), "a failed build leaves no file"
    assert compiled.softmax_rows(torch.randn(3, 5), normalise=True) is False


def test_no_compiler_falls_back(fresh, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-attnreuse")
    assert compiled.status() == "off: no C compiler (set CC, or install cc/gcc/clang)"


def test_built_once_then_loaded_from_the_cache(fresh):
    _need_kernel()
    (path,) = fresh.rglob("softmax_rows.so")
    stamp = path.stat().st_mtime_ns
    compiled._reset()
    assert compiled.status() == f"built: {path}"
    assert path.stat().st_mtime_ns == stamp, "a cached kernel is not built again"


def test_a_damaged_cached_kernel_is_rebuilt(fresh):
    _need_kernel()
    (path,) = fresh.rglob("softmax_rows.so")
    damaged = path.with_name("damaged")
    damaged.write_bytes(b"not a shared library")
    os.replace(damaged, path)  # a new file: the loaded one may still be mapped, and must not change
    compiled._reset()
    assert compiled.status() == f"built: {path}"
    p, _ = _rows(torch.zeros(1, 4), normalise=True)
    assert torch.allclose(p, torch.full((1, 4), 0.25))


def test_the_cache_key_names_the_cpu(fresh, monkeypatch):
    """A cache shared between machines never hands one machine code built for another's CPU."""
    cc = compiled._compiler()
    if cc is None:
        pytest.skip("no C compiler")
    here = compiled._key(cc)
    monkeypatch.setattr(compiled, "_cpu_identity", lambda: "model name : another CPU\nflags : sse2")
    assert compiled._key(cc) != here
    assert os.path.basename(str(compiled.cache_dir())) == fresh.name
