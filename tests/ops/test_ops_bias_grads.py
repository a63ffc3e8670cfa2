"""The bias gradient of the tiled path for biases broadcast over query rows and/or keys, with tiles
that split the rows (written against mutants mutmut left alive in `_add_dbias`, docs/testing.md)."""

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
