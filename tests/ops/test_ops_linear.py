"""ViTALiTy's Taylor attention and the kernelised linear baselines against their literal references."""

import pytest
import torch
from opscheck import BF16_ATOL, BF16_RTOL, F32_ATOL, F32_RTOL, assert_close, grads, qkv

import attnreuse.ops.linear as linear_mod
from attnreuse import ops
from attnreuse.measure import measure_peak_bytes
from attnreuse.ops import reference

VARIANTS = [
    ("taylor", {"center": "tokens"}),
    ("taylor", {"center": "features"}),
    ("taylor", {"center": None, "scale": 0.2}),
    ("linear", {"feature_map": "elu"}),
    ("linear", {"feature_map": "relu"}),
]
VARIANT_IDS = ["taylor-tokens", "taylor-features", "taylor-raw", "linear-elu", "linear-relu"]
# B, Hq, Hv, N, M, Dk, Dv: Reuse-style, grouped, multi-head; N != M, Dk != Dv
SHAPES = [(2, 1, 4, 13, 13, 8, 5), (1, 2, 4, 9, 11, 6, 6), (2, 3, 3, 7, 5, 4, 3)]


def _ops(kind):
    return (ops.taylor_attention, reference.taylor_attention) if kind == "taylor" else (
        ops.linear_attention,
        reference.linear_attention,
    )


def _check(kind, kwargs, shape, dtype, rtol, atol):
    fast, ref_fn = _ops(kind)
    q, k, v = qkv(*shape, dtype=dtype)
    out = fast(q, k, v, **kwargs)
    inputs64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = ref_fn(*inputs64, **kwargs)
    assert out.dtype == dtype
    assert_close("out", ref, out, rtol, atol)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    for name, g, w in zip(("dq", "dk", "dv"), grads(out, (q, k, v), seed), grads(ref, inputs64, seed)):
        assert g.dtype == dtype, name
        assert_close(name, w, g, rtol, atol)


@pytest.mark.parametrize("shape", SHAPES, ids=["reuse", "grouped", "mha"])
@pytest.mark.parametrize("kind, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_float32_forward_backward(kind, kwargs, shape):
    _check(kind, kwargs, shape, torch.float32, F32_RTOL, F32_ATOL)


@pytest.mark.parametrize("kind, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_bfloat16_forward_backward(kind, kwargs):
    _check(kind, kwargs, SHAPES[1], torch.bfloat16, BF16_RTOL, BF16_ATOL)


@pytest.mark.parametrize("kind, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_gradcheck_float64(kind, kwargs):
    fast, _ = _ops(kind)
    q, k, v = qkv(2, 1, 2, 4, 5, 3, 2)
    assert torch.autograd.gradcheck(lambda q, k, v: fast(q, k, v, **kwargs), (q, k, v))


def test_taylor_vanishing_denominator_is_guarded_like_the_reference():
    """Raw keys: choose q so that 1 + scale q . k_j sums to ~0 over the keys."""
    k = torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0], [2.0]]]], dtype=torch.float64)
    q = torch.tensor([[[[-0.5, 0.0], [1.0, 1.0]]]], dtype=torch.float64)  # row 0: 2 + 1 * (-0.5 * 4) = 0
    out = ops.taylor_attention(q, k, v, scale=1.0, center=None)
    ref = reference.taylor_attention(q, k, v, scale=1.0, center=None)
    assert out.isfinite().all()
    assert_close("out", ref, out, 1e-9, 1e-9)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_taylor_small_negative_denominator_keeps_its_sign(grad):
    """Raw keys, eps 1e-3 (floor eps * M = 2e-3): row 0's weights 1 + q . k_j sum to -1e-3, so the
    denominator becomes -2e-3, not +2e-3."""
    k = torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0], [2.0]]]], dtype=torch.float64)
    q = torch.tensor([[[[-0.50025, 0.0], [1.0, 1.0]]]], dtype=torch.float64, requires_grad=grad)
    kwargs = dict(scale=1.0, center=None, eps=1e-3)
    ref = reference.taylor_attention(q.detach(), k, v, **kwargs)
    weights = torch.tensor([1 - 0.50025, 1 - 3 * 0.50025], dtype=torch.float64)
    assert_close("row 0", weights @ v[0, 0] / -2e-3, ref[0, 0, 0], 1e-6, 0)  # the floor is rounded to float32
    assert_close("out", ref, ops.taylor_attention(q, k, v, **kwargs), 1e-9, 1e-9)


@pytest.mark.parametrize("kind", ["taylor", "linear"])
def test_defaults_match_the_reference(kind):
    fast, ref_fn = _ops(kind)
    q, k, v = qkv(1, 2, 4, 6, 7, 4, 3, requires_grad=False)
    assert_close(kind, ref_fn(q, k + 1, v), fast(q, k + 1, v), 1e-10, 1e-12)


def test_linear_relu_all_negative_is_finite():
    q, k, v = qkv(1, 1, 2, 4, 4, 3, 2, torch.float32, requires_grad=False)
    out = ops.linear_attention(-q.abs(), k, v, feature_map="relu")
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("kind, kwargs", [VARIANTS[0], VARIANTS[3]], ids=["taylor", "linear"])
def test_nan_propagates_like_the_reference(kind, kwargs):
    fast, ref_fn = _ops(kind)
    q, k, v = qkv(1, 2, 2, 5, 5, 3, 2, torch.float32, requires_grad=False)
    q[0, 0, 1, 0] = float("nan")
    out = fast(q, k, v, **kwargs)
    ref = ref_fn(q.double(), k.double(), v.double(), **kwargs)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()


@pytest.mark.parametrize("kind", ["taylor", "linear"])
def test_no_n_by_n_tensor(kind):
    """O(N) memory: at N = 2048 one N x N float32 map would be 16 MiB."""
    fast, _ = _ops(kind)
    q, k, v = qkv(1, 1, 4, 2048, 2048, 16, 16, torch.float32, requires_grad=False)
    peak = measure_peak_bytes(lambda: fast(q, k, v))
    assert peak < 2 << 20, peak


@pytest.mark.parametrize("chunk_bytes", [None, 300], ids=["default-chunks", "many-chunks"])
@pytest.mark.parametrize("shape", SHAPES, ids=["reuse", "grouped", "mha"])
@pytest.mark.parametrize("kind, kwargs", VARIANTS, ids=VARIANT_IDS)
def test_inference_path_matches_reference(monkeypatch, kind, kwargs, shape, chunk_bytes):
    """Without autograd the chunked in-place path runs; keys offset by 3 so centring matters."""
    if chunk_bytes is not None:
        monkeypatch.setattr(linear_mod, "CHUNK_BYTES", chunk_bytes)
    fast, ref_fn = _ops(kind)
    q, k, v = qkv(*shape, dtype=torch.float32, requires_grad=False)
    k = k + 3
    with torch.no_grad():
        out = fast(q, k, v, **kwargs)
    assert_close("out", ref_fn(q.double(), k.double(), v.double(), **kwargs), out, F32_RTOL, F32_ATOL)


@pytest.mark.parametrize("kind, kwargs", [VARIANTS[0], VARIANTS[3]], ids=["taylor", "linear"])
def test_inference_path_bfloat16(kind, kwargs):
    fast, ref_fn = _ops(kind)
    q, k, v = qkv(*SHAPES[1], dtype=torch.bfloat16, requires_grad=False)
    out = fast(q, k, v, **kwargs)
    assert out.dtype == torch.bfloat16
    assert_close("out", ref_fn(q.double(), k.double(), v.double(), **kwargs), out, BF16_RTOL, BF16_ATOL)
