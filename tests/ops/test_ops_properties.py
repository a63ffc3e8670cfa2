"""Property test: random shapes, dtypes, strides, tile sizes, biases (masks) and NaN query rows
thrown at `softmax_attention` on every backend; each call matches the float64 reference or raises a
ValueError/TypeError that names an argument."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnreuse import ops
from attnreuse.ops import reference

# bfloat16: the probabilities are rounded to 8 bits before A.V (0.4% each), so a sum over 40 keys
# can be off by a few hundredths in absolute terms
TOL = {torch.float64: (1e-9, 1e-9), torch.float32: (1e-4, 1e-5), torch.bfloat16: (5e-2, 5e-2)}


@st.composite
def _case(draw):
    B, Hq = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    Hv = Hq * draw(st.integers(1, 3))
    N, M, Dk = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 16))
    Dv = draw(st.sampled_from([Dk, draw(st.integers(1, 16))]))
    dtype = draw(st.sampled_from(list(TOL)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))

    def tensor(*shape):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64)
        if draw(st.booleans()):  # a non-contiguous view of the same values
            t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        return t

    q, k, v = tensor(B, Hq, N, Dk), tensor(B, Hq, M, Dk), tensor(B, Hv, M, Dv)
    # NaN in, NaN out: that query row's output rows are NaN (float32/64: some CPUs' bfloat16 matmul
    # kernels spread a NaN to neighbouring rows, see test_ops_nan)
    if dtype != torch.bfloat16 and draw(st.integers(0, 4)) == 0:
        q[draw(st.integers(0, B - 1)), draw(st.integers(0, Hq - 1)), draw(st.integers(0, N - 1)), draw(st.integers(0, Dk - 1))] = float("nan")
    bias = None
    if draw(st.booleans()):  # an additive mask broadcasting over some of [B, Hq, N, M]
        shape = [draw(st.sampled_from([1, s])) for s in (B, Hq, N, M)]
        # masked entries at -30 (exp(-30) ~ 1e-13): a large constant like -1e4 would measure
        # float32 rounding of the scores (ulp 1e-3 there), not the operator
        bias = torch.where(torch.rand(*shape, generator=gen) < 0.2, -30.0, 0.0).double()
        if dtype == torch.bfloat16:  # x - 30 in bfloat16 has a step of 1/8: a masked row's softmax
            bias = 0.5 * torch.randn(*shape, generator=gen, dtype=torch.float64)  # is then noise
    return dict(q=q, k=k, v=v, bias=bias, dtype=dtype, scale=draw(st.sampled_from([None, 0.5])),
                tile=draw(st.sampled_from([None, 1, 3, 16])), backend=draw(st.sampled_from(ops.BACKENDS)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_softmax_attention_matches_the_reference_or_names_the_problem(case):
    dtype = case["dtype"]
    q, k, v = (case[n].to(dtype) for n in "qkv")
    bias = None if case["bias"] is None else case["bias"].to(dtype)
    # the reference sees the same (rounded) inputs: bfloat16 input rounding is not the operator's error
    expected = reference.softmax_attention(q.double(), k.double(), v.double(), scale=case["scale"],
                                           bias=None if bias is None else bias.double())
    with ops.use_backend(case["backend"]):
        try:
            out = ops.softmax_attention(q, k, v, scale=case["scale"], bias=bias, tile=case["tile"])
        except (ValueError, TypeError) as err:
            # the backends that raise where they cannot run a call (sdpa: shared maps, Dk != Dv;
            # native: anything but float32)
            backend = case["backend"]
            assert backend in ("sdpa", "native") and f"backend '{backend}'" in str(err), err
            assert backend == "sdpa" or dtype != torch.float32, err
            return
    rtol, atol = TOL[dtype]
    # equal_nan: NaN exactly where the reference has it (a NaN query row), on every backend
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("bad, needle", [
    (dict(q=torch.randn(1, 2, 4, 8), k=torch.randn(1, 2, 4, 7)), "k must be"),
    (dict(v=torch.randn(1, 3, 4, 8)), "multiple of q/k heads"),
    (dict(q=torch.randn(1, 2, 4, 8, dtype=torch.float64)), "share one dtype"),
    (dict(tile=0), "tile must be a positive int"),
    (dict(bias=torch.randn(3, 4)), "bias must broadcast"),
])
def test_bad_arguments_are_named(bad, needle):
    args = dict(q=torch.randn(1, 2, 4, 8), k=torch.randn(1, 2, 4, 8), v=torch.randn(1, 2, 4, 8))
    args.update(bad)
    tile, bias = args.pop("tile", None), args.pop("bias", None)
    with pytest.raises((ValueError, TypeError), match=needle):
        ops.softmax_attention(args["q"], args["k"], args["v"], tile=tile, bias=bias)
