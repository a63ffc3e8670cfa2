"""Property test: random shapes, dtypes, strides and thresholds thrown at the linear-cost operators
(`taylor_attention`, `linear_attention` elu+1 / relu), ViTALiTy's sparse operators and the Taylor
layer's training path, inference (no autograd) and training (autograd) paths alike; each call
matches the float64 reference or raises an error that names the problem."""

import contextlib
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from attnreuse import ops
from attnreuse.layers import TaylorAttention
from attnreuse.ops import reference

TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 3e-2}
OPS = ("taylor", "linear", "sparse", "residual")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _layout(draw, t):
    """The same values as a contiguous tensor, a transposed-layout view or a strided slice."""
    how = draw(st.sampled_from(["contiguous", "transposed", "sliced"]))
    if how == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if how == "sliced":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


def _on_grid(t, bits, gen):
    """Values n * 2^-(bits-2) with |n| <= 2^(bits-1) - 1 (so |values| < 2) and the largest reached
    in every head: fake quantisation is then exact in every dtype (no rounding tie can fall
    differently in float32 than in float64), so the comparison measures the operator, not a
    rounding flip."""
    levels = 2 ** (bits - 1) - 1
    n = torch.randint(-levels, levels + 1, t.shape, generator=gen).double()
    n[..., 0, 0] = levels
    return n * 2.0 ** -max(0, bits - 2)


@st.composite
def _case(draw):
    op = draw(st.sampled_from(OPS))
    B, Hq = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    Hv = Hq * draw(st.integers(1, 3)) + draw(st.sampled_from([0] * 9 + [1]))  # sometimes invalid
    N, M, Dk, Dv = (draw(st.integers(1, n)) for n in (24, 24, 12, 12))
    dtype = draw(st.sampled_from(list(TOL)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    q, k, v = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((B, Hq, N, Dk), (B, Hq, M, Dk), (B, Hv, M, Dv)))
    kwargs = {}
    if op == "taylor":
        kwargs = dict(center=draw(st.sampled_from(ops.linear.TAYLOR_CENTERS)), scale=draw(st.sampled_from([None, 0.5])))
        k = k + draw(st.sampled_from([0.0, 3.0]))  # offset keys: centring matters
    elif op == "linear":
        kwargs = dict(feature_map=draw(st.sampled_from(["elu", "relu"])))
    else:
        bits = draw(st.sampled_from([2, 4, 8] if dtype == torch.bfloat16 else [2, 4, 8, 16]))
        # bfloat16 scores are rounded to 8 bits before the threshold: only threshold 0 is exact
        threshold = 0.0 if dtype == torch.bfloat16 else draw(st.sampled_from([0.0, 0.02, 0.1, 0.3]))
        kwargs = dict(threshold=threshold, bits=bits, scale=draw(st.sampled_from([None, 0.5])))
        if op == "residual":
            kwargs["center"] = draw(st.sampled_from(ops.linear.TAYLOR_CENTERS))
        if dtype != torch.float64:
            q, k = _on_grid(q, bits, gen), _on_grid(k, bits, gen)
    q, k, v = (_layout(draw, t.to(dtype)) for t in (q, k, v))
    return dict(op=op, q=q, k=k, v=v, kwargs=kwargs, dtype=dtype, train=draw(st.booleans()))


def _taylor_conditioning(q, k, kwargs):
    """max over rows of max(sum_j |w_ij|, M) / |sum_j w_ij| for the Taylor weights w (float64): how
    much rounding the output and its gradients amplify (with one key the output is v whatever the
    weight, but its gradient terms grow as 1 / weight and cancel). A denominator near 0 is a
    property of the input."""
    scale = q.shape[-1] ** -0.5 if kwargs.get("scale") is None else kwargs["scale"]
    center = kwargs.get("center")
    k = k - k.mean(-2, keepdim=True) if center == "tokens" else (k - k.mean(-1, keepdim=True) if center == "features" else k)
    w = 1 + scale * (q @ k.transpose(-1, -2))
    return (w.abs().sum(-1).clamp_min(w.shape[-1]) / w.sum(-1).abs()).max().item()


def _fast_and_reference(op):
    return {
        "taylor": (ops.taylor_attention, reference.taylor_attention),
        "linear": (ops.linear_attention, reference.linear_attention),
        "sparse": (ops.sparse_attention, reference.sparse_attention),
        "residual": (ops.taylor_residual_attention, reference.taylor_residual_attention),
    }[op]


@SETTINGS
@given(_case())
def test_linear_and_sparse_ops_match_the_reference_or_name_the_problem(case):
    fast, ref_fn = _fast_and_reference(case["op"])
    dtype, kwargs = case["dtype"], case["kwargs"]
    q, k, v = (case[n].detach().requires_grad_(case["train"]) for n in "qkv")
    if v.shape[1] % q.shape[1]:
        with pytest.raises(ValueError, match="multiple of q/k heads"):
            fast(q, k, v, **kwargs)
        return
    q64, k64, v64 = (t.detach().double().requires_grad_(case["train"]) for t in (q, k, v))
    cond = 1.0
    if case["op"] in ("taylor", "residual"):
        cond = _taylor_conditioning(q64.detach(), k64.detach(), kwargs)
        assume(cond < (1e5 if dtype == torch.float64 else 10))
    out = fast(q, k, v, **kwargs)
    expected = ref_fn(q64, k64, v64, **kwargs)
    assert out.dtype == dtype and out.shape == expected.shape
    tol = TOL[dtype] * cond
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol * scale, msg=lambda m: f"out: {m}")
    if case["train"]:
        seed = torch.randn(expected.shape, dtype=torch.float64)
        got = torch.autograd.grad(out, (q, k, v), seed.to(dtype))
        want = torch.autograd.grad(expected, (q64, k64, v64), seed)
        for name, g, w in zip(("dq", "dk", "dv"), got, want):
            gtol = tol * cond
            torch.testing.assert_close(
                g.double(), w, rtol=gtol, atol=gtol * max(1.0, w.abs().max().item()), msg=lambda m: f"{name}: {m}"
            )


@st.composite
def _layer_case(draw):
    heads = draw(st.integers(1, 3))
    return dict(
        heads=heads, dim=heads * draw(st.integers(1, 6)), tokens=draw(st.integers(1, 12)),
        dtype=draw(st.sampled_from([torch.float64, torch.float32])),
        center=draw(st.sampled_from(ops.linear.TAYLOR_CENTERS)),
        mode=draw(st.sampled_from(["additive", "residual"])),
        threshold=draw(st.sampled_from([0.0, 0.05, 0.2])), progress=draw(st.sampled_from([0.0, 0.3, 1.0])),
        seed=draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(_layer_case())
def test_taylor_layer_training_path_matches_the_reference(case):
    """train(): Taylor output plus the (annealed) sparse branch, on the layer's own q, k, v, with
    the sparse branch's quantisation fed through exactly (grid values would need the layer's
    weights on a grid; here the reference quantises the same float64 values the layer saw)."""
    torch.manual_seed(case["seed"])
    dtype = case["dtype"]
    layer = TaylorAttention(case["dim"], num_heads=case["heads"], center=case["center"],
                            sparse_threshold=case["threshold"], sparse_mode=case["mode"]).to(dtype).train()
    layer.set_progress(case["progress"])
    x = torch.randn(2, case["tokens"], case["dim"], dtype=dtype)
    q, k, v = layer.qkv(x).view(2, case["tokens"], 3, case["heads"], -1).permute(2, 0, 3, 1, 4).detach().unbind(0)
    q64, k64, v64 = q.double(), k.double(), v.double()
    cond = _taylor_conditioning(q64, k64, dict(center=case["center"]))
    assume(cond < (1e5 if dtype == torch.float64 else 10))
    if dtype != torch.float64:
        # the layer quantises in float32: let the reference quantise exactly those values
        quantised = {id(q64): ops.fake_quant(q, 4).double(), id(k64): ops.fake_quant(k, 4).double()}
        patch = mock.patch.object(reference, "fake_quant", lambda t, bits: quantised[id(t)])
    else:
        patch = contextlib.nullcontext()
    kw = dict(threshold=case["threshold"], bits=4)
    with patch:
        sparse = (reference.taylor_residual_attention(q64, k64, v64, center=case["center"], **kw)
                  if case["mode"] == "residual" else reference.sparse_attention(q64, k64, v64, **kw))
    heads_out = reference.taylor_attention(q64, k64, v64, center=case["center"]) + layer.sparse_weight * sparse
    B, H, N, d = heads_out.shape
    expected = torch.nn.functional.linear(
        heads_out.transpose(1, 2).reshape(B, N, H * d), layer.proj.weight.double(), layer.proj.bias.double()
    )
    out = layer(x)
    tol = TOL[dtype] * cond
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol * max(1.0, expected.abs().max().item()))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in layer.parameters()), "a parameter got no finite gradient"
