"""Which path the linear-cost operators take and what it accumulates in: autograd whenever any one
of q, k, v needs a gradient, and float32 sums over many key chunks for bf16 inputs. Written against
mutants mutmut left alive in ops/linear.py (docs/testing.md)."""

import pytest
import torch
from opscheck import BF16_RTOL, assert_close, grads, qkv

import attnreuse.ops.linear as linear_mod
from attnreuse import ops
from attnreuse.measure import measure_peak_bytes
from attnreuse.ops import reference

OPS = {
    "taylor": (ops.taylor_attention, reference.taylor_attention, {"center": "features"}),
    "linear": (ops.linear_attention, reference.linear_attention, {"feature_map": "elu"}),
}


@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("kind", list(OPS))
def test_gradient_reaches_the_one_input_that_needs_it(kind, which):
    fast, ref_fn, kwargs = OPS[kind]
    q, k, v = qkv(1, 2, 4, 5, 6, 3, 2, requires_grad=False)
    named = {"q": q, "k": k, "v": v}
    named[which].requires_grad_()
    out = fast(q, k, v, **kwargs)
    assert out.requires_grad, f"{kind}: no autograd graph although {which} needs a gradient"
    ref = ref_fn(q, k, v, **kwargs)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    (got,), (want,) = grads(out, (named[which],), seed), grads(ref, (named[which],), seed)
    assert_close(f"d{which}", want, got, 1e-10, 1e-12)


@pytest.mark.parametrize("kind", list(OPS))
def test_bfloat16_sums_over_many_chunks_stay_float32(monkeypatch, kind):
    """A few keys per chunk, 4000 keys: the sums gather about a thousand chunk sums each; added up in
    bf16 (8 bits: step 16 at 4000) they would be off by tens of percent (seen: 0.72 for the elu map,
    0.5 for Taylor, against the reference), far beyond the output's own rounding. The elu features
    of shifted keys make G and k_sum grow; Taylor centres the keys, so its growing sum is v_sum."""
    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", 64)
    fast, ref_fn, kwargs = OPS[kind]
    q, k, v = qkv(1, 1, 2, 4, 4000, 8, 4, torch.bfloat16, requires_grad=False)
    k, v = k + 1, v + (2 if kind == "taylor" else 0)
    out = fast(q, k, v, **kwargs)
    assert_close("out", ref_fn(q.double(), k.double(), v.double(), **kwargs), out, BF16_RTOL, 1e-2)


@pytest.mark.parametrize("shape", [(1, 4, 4, 4096, 4096, 16, 16), (1, 64, 64, 64, 64, 16, 16)],
                         ids=["long-rows", "many-heads"])
@pytest.mark.parametrize("kind", list(OPS))
def test_kernelised_temporaries_stay_within_a_few_chunks(monkeypatch, kind, shape):
    """Besides the output and the per-head sums (G, k_sum and [scale G ; v_sum]: O(BH Dk Dv)), the
    chunked inference path allocates a few CHUNK_BYTES: key chunks of CHUNK_BYTES, query blocks of
    whole heads only while they fit."""
    chunk = 64 << 10
    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", chunk)
    fast, ref_fn, kwargs = OPS[kind]
    q, k, v = qkv(*shape, torch.float32, requires_grad=False)
    B, H, N, Dk = q.shape
    out_bytes, sums_bytes = B * H * N * v.shape[3] * 4, B * H * (2 * Dk + 2) * v.shape[3] * 4
    peak = measure_peak_bytes(lambda: fast(q, k, v, **kwargs))
    assert peak < out_bytes + sums_bytes + 4 * chunk, (
        f"peak {peak} bytes: output {out_bytes} and sums {sums_bytes} plus more than a few chunks")


@pytest.mark.parametrize("shape", [(1, 4, 4, 4096, 64, 16, 16), (1, 64, 64, 64, 64, 16, 16)],
                         ids=["long-rows", "many-heads"])
def test_kernelised_visits_each_row_once(monkeypatch, shape):
    """O(N) work: the feature map sees every query row and every key row exactly once, in blocks."""
    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", 64 << 10)
    seen = []
    elu1 = linear_mod._elu1
    monkeypatch.setattr(linear_mod, "_elu1", lambda x, scratch: seen.append(x.shape[0] * x.shape[1]) or elu1(x, scratch))
    q, k, v = qkv(*shape, torch.float32, requires_grad=False)
    ops.linear_attention(q, k, v)
    BH = q.shape[0] * q.shape[1]
    assert sum(seen) == BH * (q.shape[2] + k.shape[2]), f"{sum(seen)} rows mapped, {BH} x (N + M) expected"
