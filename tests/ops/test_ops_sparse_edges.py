"""Edges of the sparse operators that random inputs never hit: the defaults agree with the
reference's, a given scale is used, an entry exactly at the threshold is kept (`>=`), the residual's
vanishing Taylor denominator is guarded, and in bf16 / fp16 the quantisation stays on its levels
and the threshold sees the float32 map. Written against mutants mutmut left alive (docs/testing.md)."""

import pytest
import torch
from opscheck import assert_close, qkv

from attnreuse import ops
from attnreuse.ops import reference


@pytest.mark.parametrize("name", ["sparse_attention", "taylor_residual_attention"])
def test_defaults_match_the_reference(name):
    q, k, v = qkv(2, 1, 2, 7, 6, 5, 3, requires_grad=False)
    out = getattr(ops, name)(q, k, v, threshold=0.1)
    assert_close(name, getattr(reference, name)(q, k, v, threshold=0.1), out, 1e-10, 1e-12)


@pytest.mark.parametrize("name", ["sparse_attention", "taylor_residual_attention"])
def test_a_given_scale_is_used(name):
    q, k, v = qkv(1, 2, 2, 5, 6, 4, 3, requires_grad=False)
    out = getattr(ops, name)(q, k, v, threshold=0.05, scale=0.3)
    assert_close(name, getattr(reference, name)(q, k, v, threshold=0.05, scale=0.3), out, 1e-10, 1e-12)


@pytest.mark.parametrize("name", ["sparse_attention", "taylor_residual_attention"])
def test_an_entry_at_the_threshold_is_kept(name):
    """q = 0: every map entry is exactly 1/M = 0.25, the threshold; all are kept."""
    _, k, v = qkv(1, 1, 1, 3, 4, 2, 2, requires_grad=False)
    q = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    out = getattr(ops, name)(q, k, v, threshold=0.25)
    ref = getattr(reference, name)(q, k, v, threshold=0.25)
    assert_close(name, ref, out, 1e-12, 1e-12)
    if name == "sparse_attention":
        assert_close("kept map", v.mean(-2, keepdim=True).expand_as(out), out, 1e-12, 1e-12)


@pytest.mark.parametrize("dtype, bits, peak", [(torch.bfloat16, 8, 0.6640625), (torch.float16, 16, 0.50048828125)])
def test_fake_quant_stays_on_its_levels_in_low_precision(dtype, bits, peak):
    """In bf16 / fp16, peak / (peak / levels) rounds to levels + 1 for these peaks: the clamp keeps
    every value on the 2^(bits-1) - 1 levels each side, so none outgrows the largest input."""
    x = torch.tensor([peak, -peak, 0.25, -0.1], dtype=dtype).view(1, 1, 2, 2)
    y = ops.fake_quant(x, bits)
    assert torch.equal(y, reference.fake_quant(x, bits))
    assert y.abs().max() <= peak, f"{y.flatten().tolist()} outgrow the input's peak {peak}"


def test_low_precision_threshold_is_applied_to_the_float32_map():
    """bf16 inputs: the map is formed and thresholded in float32, then rounded to bf16. With a
    threshold between an entry's float32 value and its (larger) bf16 rounding, it is dropped."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 6, 4, dtype=torch.bfloat16), torch.randn(1, 1, 6, 4, dtype=torch.bfloat16)
    v = torch.eye(6, dtype=torch.bfloat16).view(1, 1, 6, 6)  # out = the kept map itself
    scores = ops.fake_quant(q, 4) @ ops.fake_quant(k, 4).transpose(-1, -2)
    p32 = torch.softmax(scores.float(), dim=-1)
    rounded_up = (p32.bfloat16().float() > p32).nonzero()
    assert len(rounded_up), "no entry rounds up in bf16 (seed changed?)"
    at = tuple(rounded_up[0].tolist())
    threshold = (p32[at].item() + p32.bfloat16().float()[at].item()) / 2
    out = ops.sparse_attention(q, k, v, threshold=threshold, bits=4, scale=1.0)
    assert out.dtype == torch.bfloat16 and out[at] == 0
    assert torch.equal(out, (p32 * (p32 >= threshold)).bfloat16())


def test_taylor_residual_entry_at_the_threshold_is_kept():
    """Row 0 of q is below half a quantisation step, so its quantised softmax row is exactly 1/M =
    the threshold, while its Taylor weights (from the raw q) are not: the kept residual is nonzero."""
    _, k, v = qkv(1, 1, 1, 2, 4, 2, 3, requires_grad=False)
    q = torch.tensor([[[[0.01, -0.02], [1.0, 0.5]]]], dtype=torch.float64)  # step 1/7 at 4 bits
    out = ops.taylor_residual_attention(q, k, v, threshold=0.25, bits=4)
    ref = reference.taylor_residual_attention(q, k, v, threshold=0.25, bits=4)
    assert out[0, 0, 0].abs().max() > 1e-4
    assert_close("residual", ref, out, 1e-12, 1e-12)


@pytest.mark.parametrize("q0, denom", [(1.0, 2e-3), (1.0005, -2e-3)], ids=["zero", "small-negative"])
def test_taylor_residual_vanishing_denominator_is_guarded_like_the_reference(q0, denom):
    """Raw keys k = [0, -2], Dk = 1, scale 1, eps 1e-3: the Taylor weights [1, 1 - 2 q] sum to 0
    (q = 1) or -1e-3, so the denominator becomes eps * M = 2e-3 or, sign kept, -2e-3."""
    q = torch.full((1, 1, 1, 1), q0, dtype=torch.float64)
    k = torch.tensor([0.0, -2.0], dtype=torch.float64).view(1, 1, 2, 1)
    v = torch.tensor([1.0, 3.0], dtype=torch.float64).view(1, 1, 2, 1)
    kwargs = dict(threshold=0.0, bits=16, scale=1.0, center=None, eps=1e-3)
    ref = reference.taylor_residual_attention(q, k, v, **kwargs)
    attn = torch.softmax(q[0, 0, 0] * k[0, 0, :, 0], dim=0)
    taylor = torch.tensor([1.0, 1 - 2 * q0], dtype=torch.float64) / denom
    assert_close("reference", (attn - taylor) @ v[0, 0], ref[0, 0, 0], 1e-6, 0)  # the floor is rounded to float32
    assert_close("residual", ref, ops.taylor_residual_attention(q, k, v, **kwargs), 1e-10, 1e-10)
