"""Bad input raises ValueError/TypeError whose message names the argument and what it got."""

import pytest
import torch

from attnreuse import ops

OPS = {
    "softmax_attention": ops.softmax_attention,
    "taylor_attention": ops.taylor_attention,
    "linear_attention": ops.linear_attention,
    "sparse_attention": lambda q, k, v: ops.sparse_attention(q, k, v, threshold=0.1),
}


def _good(B=2, Hq=2, Hv=4, N=5, M=6, Dk=4, Dv=3):
    return torch.randn(B, Hq, N, Dk), torch.randn(B, Hq, M, Dk), torch.randn(B, Hv, M, Dv)


def _replace(which, make):
    q, k, v = _good()
    args = {"q": q, "k": k, "v": v}
    args[which] = make(args[which])
    return args["q"], args["k"], args["v"]


BAD_QKV = [
    ("batch", lambda: _replace("k", lambda k: torch.randn(3, 2, 6, 4)), ValueError, r"k must be .* got \(3, 2, 6, 4\)"),
    ("qk-heads", lambda: _replace("k", lambda k: torch.randn(2, 1, 6, 4)), ValueError, r"k must be .* got \(2, 1, 6, 4\)"),
    ("qk-width", lambda: _replace("k", lambda k: torch.randn(2, 2, 6, 5)), ValueError, r"k must be .* got \(2, 2, 6, 5\)"),
    ("v-batch", lambda: _replace("v", lambda v: torch.randn(1, 4, 6, 3)), ValueError, r"v must be .* got \(1, 4, 6, 3\)"),
    ("v-tokens", lambda: _replace("v", lambda v: torch.randn(2, 4, 7, 3)), ValueError, r"v must be .* got \(2, 4, 7, 3\)"),
    ("heads-not-multiple", lambda: _replace("v", lambda v: torch.randn(2, 3, 6, 3)), ValueError, r"Hv % Hq == 0.*Hv=3, Hq=2"),
    ("integer", lambda: _replace("q", lambda q: q.long()), TypeError, r"q must be a floating-point tensor, got dtype torch.int64"),
    ("mixed-dtypes", lambda: _replace("v", lambda v: v.double()), TypeError, r"q, k, v must share one dtype.*v=torch.float64"),
    ("rank", lambda: _replace("q", lambda q: q[0]), ValueError, r"q must have 4 dimensions, got shape \(2, 5, 4\)"),
    ("k-rank", lambda: _replace("k", lambda k: k[0]), ValueError, r"k must have 4 dimensions, got shape \(2, 6, 4\)"),
    ("v-rank", lambda: _replace("v", lambda v: v[0]), ValueError, r"v must have 4 dimensions, got shape \(4, 6, 3\)"),
    # a second device without a GPU: "meta" tensors carry shapes and dtypes only
    ("mixed-devices", lambda: _replace("k", lambda k: k.to("meta")), ValueError,
     r"^q, k, v must be on one device, got q=cpu, k=meta, v=cpu$"),
    ("empty-queries", lambda: _replace("q", lambda q: q[:, :, :0]), ValueError, r"q must not be empty, got shape \(2, 2, 0, 4\)"),
    ("empty-keys", lambda: (lambda q, k, v: (q, k[:, :, :0], v[:, :, :0]))(*_good()), ValueError, r"k must not be empty"),
    ("not-a-tensor", lambda: _replace("v", lambda v: v.tolist()), TypeError, r"v must be a torch.Tensor, got list"),
    ("q-not-a-tensor", lambda: _replace("q", lambda q: q.tolist()), TypeError, r"q must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("make, error, message", [b[1:] for b in BAD_QKV], ids=[b[0] for b in BAD_QKV])
def test_bad_qkv(op, make, error, message):
    with pytest.raises(error, match=message):
        OPS[op](*make())


@pytest.mark.parametrize(
    "bias, error, message",
    [
        (torch.randn(5, 5), ValueError, r"bias must broadcast to \[B, Hq, N, M\] = \[2, 2, 5, 6\], got shape \(5, 5\)"),
        (torch.randn(3, 2, 5, 6), ValueError, r"bias must broadcast .* got shape \(3, 2, 5, 6\)"),
        (torch.randn(1, 1, 1, 5, 6), ValueError, r"bias must broadcast .* got shape \(1, 1, 1, 5, 6\)"),
        (torch.ones(5, 6, dtype=torch.long), TypeError, r"bias must be a floating-point tensor, got dtype torch.int64"),
        (torch.randn(5, 6, dtype=torch.float64), TypeError, r"q, bias must share one dtype, got q=torch.float32, bias=torch.float64"),
        ([[0.0]], TypeError, r"bias must be a torch.Tensor or None, got list"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "tiled", "dense"])
def test_bad_bias(bias, error, message, backend):
    with ops.use_backend(backend), pytest.raises(error, match=message):
        ops.softmax_attention(*_good(), bias=bias)


@pytest.mark.parametrize("tile", [0, -3, 2.5, True, "8"])
def test_bad_tile(tile):
    with pytest.raises(ValueError, match=rf"tile must be a positive int or None, got {tile!r}"):
        ops.softmax_attention(*_good(), tile=tile)


@pytest.mark.parametrize(
    "scale, error, message",
    [("0.5", TypeError, "scale must be a float or None, got str"), (True, TypeError, "got bool"),
     (float("nan"), ValueError, "scale must be finite, got nan"), (float("inf"), ValueError, "got inf")],
)
@pytest.mark.parametrize("op", ["softmax_attention", "taylor_attention", "sparse_attention", "attention_map"])
def test_bad_scale(op, scale, error, message):
    q, k, v = _good()
    calls = {
        "softmax_attention": lambda: ops.softmax_attention(q, k, v, scale=scale),
        "taylor_attention": lambda: ops.taylor_attention(q, k, v, scale=scale),
        "sparse_attention": lambda: ops.sparse_attention(q, k, v, threshold=0.1, scale=scale),
        "attention_map": lambda: ops.attention_map(q, k, scale=scale),
    }
    with pytest.raises(error, match=message):
        calls[op]()


@pytest.mark.parametrize("threshold", [-0.1, 1.0, float("nan"), "0.1", True])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold must be a float in \\[0, 1\\), got"):
        ops.sparse_attention(*_good(), threshold=threshold)


@pytest.mark.parametrize("bits", [1, 17, 4.0, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 16\], got"):
        ops.sparse_attention(*_good(), threshold=0.1, bits=bits)


def test_bad_choices_and_eps():
    q, k, v = _good()
    with pytest.raises(ValueError, match=r"center must be one of .* got 'keys'"):
        ops.taylor_attention(q, k, v, center="keys")
    with pytest.raises(ValueError, match=r"feature_map must be one of .* got 'gelu'"):
        ops.linear_attention(q, k, v, feature_map="gelu")
    for call in (ops.taylor_attention, ops.linear_attention):
        for eps in (0.0, -1e-6, float("inf"), "1e-6"):
            with pytest.raises(ValueError, match="eps must be a positive finite float, got"):
                call(q, k, v, eps=eps)


def test_bad_attention_map_and_apply_map():
    q, k, v = _good()
    with pytest.raises(ValueError, match=r"k must be \[B, H, M, Dk\] .* got \(2, 2, 6, 3\)"):
        ops.attention_map(q, k[..., :3])
    with pytest.raises(ValueError, match=r"bias must broadcast"):
        ops.attention_map(q, k, bias=torch.randn(4, 6))
    attn = torch.softmax(torch.randn(2, 2, 5, 6), -1)
    with pytest.raises(ValueError, match=r"v must be \[B, Hv, M, Dv\] with B=2, M=6 .* got \(2, 3, 6, 3\)"):
        ops.apply_map(attn, torch.randn(2, 3, 6, 3))
    with pytest.raises(ValueError, match=r"v must be .* got \(2, 4, 5, 3\)"):
        ops.apply_map(attn, torch.randn(2, 4, 5, 3))
    with pytest.raises(TypeError, match="attn, v must share one dtype"):
        ops.apply_map(attn, v.double())
    with pytest.raises(ValueError, match=r"attn must have 4 dimensions"):
        ops.apply_map(attn[0], v)
