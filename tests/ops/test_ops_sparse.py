"""ViTALiTy's thresholded sparse attention and its fake quantisation against the literal references."""

import pytest
import torch
from opscheck import BF16_ATOL, BF16_RTOL, F32_ATOL, F32_RTOL, assert_close, grads, qkv

from attnreuse import ops
from attnreuse.ops import reference


@pytest.mark.parametrize("shape", [(2, 1, 4, 9, 7, 6, 5), (1, 2, 4, 8, 8, 4, 4), (2, 3, 3, 5, 6, 4, 3)])
@pytest.mark.parametrize("threshold, bits", [(0.0, 4), (0.08, 4), (0.15, 8)])
def test_matches_reference_forward_backward(shape, threshold, bits):
    """float64 (the straight-through estimator makes gradcheck's numerical derivative meaningless:
    the gradients are compared with the reference's) and float32."""
    q, k, v = qkv(*shape)
    ref = reference.sparse_attention(q, k, v, threshold=threshold, bits=bits)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    want = grads(ref, (q, k, v), seed)
    for dtype, rtol, atol in ((torch.float64, 1e-10, 1e-12), (torch.float32, F32_RTOL, F32_ATOL)):
        inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
        out = ops.sparse_attention(*inputs, threshold=threshold, bits=bits)
        assert out.dtype == dtype
        assert_close(f"out[{dtype}]", ref, out, rtol, atol)
        for name, g, w in zip(("dq", "dk", "dv"), grads(out, inputs, seed), want):
            assert_close(f"{name}[{dtype}]", w, g, rtol, atol)


def test_threshold_drops_entries():
    q, k, v = qkv(1, 1, 1, 6, 6, 4, 6, torch.float32, requires_grad=False)
    v = torch.eye(6).view(1, 1, 6, 6)  # out = the (thresholded) map itself
    full = ops.sparse_attention(q, k, v, threshold=0.0)
    cut = ops.sparse_attention(q, k, v, threshold=0.2)
    assert torch.allclose(full.sum(-1), torch.ones(1, 1, 6))
    assert torch.equal(cut, full * (full >= 0.2)) and (cut == 0).any()


def test_sixteen_bits_without_threshold_is_softmax_attention():
    q, k, v = qkv(2, 1, 2, 7, 7, 4, 3, torch.float32, requires_grad=False)
    assert_close("out", ops.softmax_attention(q, k, v), ops.sparse_attention(q, k, v, threshold=0.0, bits=16), 1e-3, 1e-4)


def test_bfloat16_runs_forward_backward():
    q, k, v = qkv(1, 2, 4, 8, 8, 4, 4, torch.bfloat16)
    out = ops.sparse_attention(q, k, v, threshold=0.0, bits=8)
    ref = reference.sparse_attention(q.double(), k.double(), v.double(), threshold=0.0, bits=8)
    assert out.dtype == torch.bfloat16
    assert_close("out", ref, out, BF16_RTOL, BF16_ATOL)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.isfinite().all() for t in (q, k, v))


def test_fake_quant_levels_and_straight_through_gradient():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64).view(1, 1, 11, 1).requires_grad_()
    y = ops.fake_quant(x, 3)  # levels -3..3, step 1/3
    assert torch.equal(y, reference.fake_quant(x, 3))
    assert torch.allclose(y * 3, torch.round(y * 3))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("center", ["tokens", "features", None])
@pytest.mark.parametrize("shape", [(2, 1, 4, 9, 7, 6, 5), (1, 2, 2, 6, 8, 4, 4)])
def test_taylor_residual_matches_reference_forward_backward(shape, center):
    q, k, v = qkv(*shape)
    ref = reference.taylor_residual_attention(q, k, v, threshold=0.1, bits=4, center=center)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    want = grads(ref, (q, k, v), seed)
    for dtype, rtol, atol in ((torch.float64, 1e-10, 1e-12), (torch.float32, F32_RTOL, F32_ATOL)):
        inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
        out = ops.taylor_residual_attention(*inputs, threshold=0.1, bits=4, center=center)
        assert out.dtype == dtype
        assert_close(f"out[{dtype}]", ref, out, rtol, atol)
        for name, g, w in zip(("dq", "dk", "dv"), grads(out, inputs, seed), want):
            assert_close(f"{name}[{dtype}]", w, g, rtol, atol)


def test_taylor_plus_unthresholded_residual_is_softmax_attention():
    """The residual holds exactly the higher-order terms: added to the Taylor output with nothing
    dropped (and 16-bit q/k), it gives softmax attention back."""
    q, k, v = qkv(2, 2, 4, 7, 9, 4, 3, torch.float64, requires_grad=False)
    total = ops.taylor_attention(q, k, v) + ops.taylor_residual_attention(q, k, v, threshold=0.0, bits=16)
    assert_close("taylor + residual", ops.softmax_attention(q, k, v), total, 1e-3, 1e-4)
    cut = ops.taylor_residual_attention(q, k, v, threshold=0.99, bits=16)
    assert torch.equal(cut, torch.zeros_like(cut))  # no softmax entry reaches 0.99 here


def test_taylor_residual_rejects_bad_arguments():
    q, k, v = qkv(1, 1, 1, 4, 4, 4, 4, torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match="threshold"):
        ops.taylor_residual_attention(q, k, v, threshold=1.5)
    with pytest.raises(ValueError, match="center must be one of"):
        ops.taylor_residual_attention(q, k, v, threshold=0.1, center="rows")
    with pytest.raises(ValueError, match="bits"):
        ops.taylor_residual_attention(q, k, v, threshold=0.1, bits=1)
