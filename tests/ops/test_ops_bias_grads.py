"""The tiled path's backward: the bias gradient for biases broadcast over query rows and/or keys
with tiles that split the rows, and the user's tile honoured (written against mutants mutmut left
alive in `_add_dbias` and `_TiledAttention.backward`, docs/testing.md)."""

import pytest
import torch
from opscheck import assert_close, grads, qkv

from attnreuse import ops
from attnreuse.ops import reference


@pytest.mark.parametrize("bias_shape", [(2, 1, 1, 5), (1, 2, 1, 5), (2, 2, 1, 1), (1, 1, 6, 1)],
                         ids=["key-bias-per-batch", "key-bias-per-head", "scalar-per-batch-head", "row-bias"])
@pytest.mark.parametrize("Hq, Hv", [(2, 2), (1, 2)], ids=["mha", "reuse"])
def test_broadcast_bias_gradient_with_row_tiles(bias_shape, Hq, Hv):
    if bias_shape[1] > Hq:
        bias_shape = (bias_shape[0], Hq, *bias_shape[2:])
    q, k, v = qkv(2, Hq, Hv, 6, 5, 3, 4)
    bias = torch.randn(bias_shape, dtype=torch.float64, requires_grad=True)
    with ops.use_backend("tiled"):
        out = ops.softmax_attention(q, k, v, bias=bias, tile=2)  # three row tiles
    ref = reference.softmax_attention(q, k, v, bias=bias)
    assert_close("out", ref, out, 1e-10, 1e-12)
    seed = torch.randn(ref.shape, dtype=torch.float64)
    for name, g, w in zip(("dq", "dk", "dv", "dbias"), grads(out, (q, k, v, bias), seed), grads(ref, (q, k, v, bias), seed)):
        assert_close(name, w, g, 1e-10, 1e-12)


def test_backward_honours_the_user_tile():
    """tile=16 at N=M=1024: forward and backward each hold a 16-row score tile (64 KiB), not the
    default tile, which here would be the whole 4 MiB map."""
    from attnreuse.measure import measure_peak_bytes

    q, k, v = qkv(1, 1, 1, 1024, 1024, 8, 8, torch.float32)
    with ops.use_backend("tiled"):
        forward = measure_peak_bytes(lambda: ops.softmax_attention(q, k, v, tile=16))  # the autograd path
        out = ops.softmax_attention(q, k, v, tile=16)
    assert forward < (1 << 20), f"forward peak {forward} bytes: the 16-row tile was not used"
    seed = torch.randn_like(out)
    peak = measure_peak_bytes(lambda: torch.autograd.grad(out, (q, k, v), seed))
    assert peak < (1 << 20), f"backward peak {peak} bytes: the 16-row tile was not used"
