"""Reduced precision as a first-class path: bf16 inputs on every backend (SDPA included) and float32
inputs under `torch.autocast('cpu', dtype=torch.bfloat16)`, forward and backward against the float64
reference with bf16 tolerances; long rows, where a softmax sum or Taylor denominator kept in bf16
would drift, stay within them."""

import pytest
import torch
from opscheck import BF16_ATOL, BF16_RTOL, assert_close, grads, qkv

from attnreuse import ops
from attnreuse.ops import reference
from attnreuse.ops._precision import accumulation_dtype, autocast_inputs

# B, Hq, Hv, N, M, Dk, Dv, bias shape
MHA = (2, 2, 2, 9, 12, 8, 8, (2, 1, 1, 12))
REUSE = (1, 1, 4, 11, 11, 8, 4, (11, 11))


def _inputs(case, dtype):
    B, Hq, Hv, N, M, Dk, Dv, bias_shape = case
    q, k, v = qkv(B, Hq, Hv, N, M, Dk, Dv, dtype)
    bias = torch.randn(bias_shape, dtype=torch.float64).to(dtype).requires_grad_()
    return q, k, v, bias


def _check_softmax(case, backend, in_dtype, autocast):
    q, k, v, bias = _inputs(case, in_dtype)
    with ops.use_backend(backend), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = ops.softmax_attention(q, k, v, bias=bias)
    assert out.dtype == torch.bfloat16
    inputs64 = [x.detach().double().requires_grad_() for x in (q, k, v, bias)]
    ref = reference.softmax_attention(*inputs64[:3], bias=inputs64[3])
    assert_close("out", ref, out, BF16_RTOL, BF16_ATOL)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    for name, g, w in zip(("dq", "dk", "dv", "dbias"), grads(out, (q, k, v, bias), seed), grads(ref, inputs64, seed)):
        assert g.dtype == in_dtype, name
        assert_close(name, w, g, BF16_RTOL, BF16_ATOL)


@pytest.mark.parametrize("backend", ["sdpa", "auto"])
def test_bfloat16_sdpa_backend_forward_backward(backend):
    _check_softmax(MHA, backend, torch.bfloat16, autocast=False)


@pytest.mark.parametrize(
    "case, backend",
    [(MHA, b) for b in ("tiled", "dense", "auto", "sdpa")] + [(REUSE, b) for b in ("tiled", "dense", "auto")],
    ids=[f"mha-{b}" for b in ("tiled", "dense", "auto", "sdpa")] + [f"reuse-{b}" for b in ("tiled", "dense", "auto")],
)
def test_autocast_runs_the_bf16_path_forward_backward(case, backend):
    """float32 leaves, bf16 autocast: bf16 out, float32 gradients, both within bf16 tolerances."""
    _check_softmax(case, backend, torch.float32, autocast=True)


@pytest.mark.parametrize("backend", ["tiled", "dense", "auto"])
def test_long_rows_keep_softmax_statistics_in_float32(backend):
    """600 keys of near-equal score: each probability ~1/600 is far below bf16's step at 1 (2^-8), so
    the row statistics must be held in float32 for the output to match the reference."""
    q, k, v = qkv(1, 1, 2, 4, 600, 8, 4, torch.bfloat16, requires_grad=False)
    q = q * 0.05
    with ops.use_backend(backend):
        out = ops.softmax_attention(q, k, v)
    ref = reference.softmax_attention(q.double(), k.double(), v.double())
    assert_close("out", ref, out, BF16_RTOL, 1e-2)


@pytest.mark.parametrize(
    "fn, kwargs",
    [("taylor", {"center": "tokens"}), ("taylor", {"center": None, "scale": 0.2}), ("linear", {"feature_map": "elu"}),
     ("linear", {"feature_map": "relu", "eps": 5.0})],  # the arguments survive the autocast re-entry
    ids=["taylor-tokens", "taylor-raw", "linear-elu", "linear-relu-eps"],
)
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_linear_family_under_autocast(fn, kwargs, grad):
    fast = ops.taylor_attention if fn == "taylor" else ops.linear_attention
    ref_fn = reference.taylor_attention if fn == "taylor" else reference.linear_attention
    q, k, v = qkv(2, 2, 4, 9, 11, 6, 6, torch.float32, requires_grad=grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(q, k, v, **kwargs)
    assert out.dtype == torch.bfloat16
    inputs64 = [x.detach().double().requires_grad_(grad) for x in (q, k, v)]
    ref = ref_fn(*inputs64, **kwargs)
    assert_close("out", ref, out, BF16_RTOL, BF16_ATOL)
    if grad:
        seed = torch.randn(ref.shape, dtype=torch.float64)
        for name, g, w in zip(("dq", "dk", "dv"), grads(out, (q, k, v), seed), grads(ref, inputs64, seed)):
            assert g.dtype == torch.float32, name
            assert_close(name, w, g, BF16_RTOL, BF16_ATOL)


def test_taylor_long_rows_bfloat16():
    """1000 keys offset from zero (so centring matters): k_sum, v_sum and the denominators ~M = 1000
    (bf16 step 4 there) are held in float32 and the output matches the reference."""
    q, k, v = qkv(1, 1, 2, 5, 1000, 8, 4, torch.bfloat16, requires_grad=False)
    for center in ("tokens", "features"):
        out = ops.taylor_attention(q, k + 2, v, center=center)
        ref = reference.taylor_attention(q.double(), (k + 2).double(), v.double(), center=center)
        assert_close(f"out ({center})", ref, out, BF16_RTOL, 1e-2)


def test_float64_is_left_alone_by_autocast():
    q, k, v = qkv(1, 2, 2, 5, 5, 4, 4, torch.float64, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.softmax_attention(q, k, v)
    assert out.dtype == torch.float64
    assert accumulation_dtype(torch.bfloat16) == torch.float32 == accumulation_dtype(torch.float32)
    assert autocast_inputs(torch.bfloat16, q, None) == (q, None)


def test_taylor_denominator_floor_under_autocast_is_the_given_eps():
    """Raw keys [1, 3] and q row 0 = -0.5 (exact in bf16): the weights 1 + q . k sum to exactly 0, so
    the denominator becomes eps * M = 2e-3 with eps = 1e-3, inside autocast as outside."""
    k = torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]])
    v = torch.tensor([[[[1.0], [2.0]]]])
    q = torch.tensor([[[[-0.5, 0.0], [1.0, 1.0]]]])
    kwargs = dict(scale=1.0, center=None, eps=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.taylor_attention(q, k, v, **kwargs)
    ref = reference.taylor_attention(q.double(), k.double(), v.double(), **kwargs)
    assert_close("out", ref, out, BF16_RTOL, BF16_ATOL)
