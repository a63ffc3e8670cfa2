"""Graph capture for export: inside `ops.exporting()` every operator records its plain form, so a
traced graph computes what eager computes (the eager fast paths write with `out=`, which the
tracer does not record)."""

import pytest
import torch

from attnreuse import ops


def _trace_matches(fn, *inputs):
    with torch.no_grad():
        eager = fn(*inputs)
        with ops.exporting():
            traced = torch.jit.trace(fn, inputs, check_trace=False)
        fresh = tuple(torch.randn_like(x) for x in inputs)
        torch.testing.assert_close(traced(*fresh), fn(*fresh), rtol=1e-5, atol=1e-5, msg="traced vs eager")
    return eager


@pytest.mark.parametrize(
    "op",
    [
        lambda q, k, v: ops.softmax_attention(q, k, v),
        lambda q, k, v: ops.taylor_attention(q, k, v),
        lambda q, k, v: ops.linear_attention(q, k, v, feature_map="elu"),
        lambda q, k, v: ops.linear_attention(q, k, v, feature_map="relu"),
    ],
    ids=["softmax-reuse", "taylor", "linear-elu", "linear-relu"],
)
def test_traced_graph_equals_eager(op):
    q, k, v = torch.randn(2, 1, 37, 8), torch.randn(2, 1, 37, 8), torch.randn(2, 4, 37, 8)
    _trace_matches(op, q, k, v)


@pytest.mark.parametrize("backend", ["tiled", "auto"])
def test_tiled_path_refuses_a_trace_outside_exporting(backend):
    q, k, v = torch.randn(1, 1, 9, 4), torch.randn(1, 1, 9, 4), torch.randn(1, 2, 9, 4)
    with ops.use_backend(backend), pytest.raises(ValueError, match=r"tiled.*exporting\(\)"):
        torch.jit.trace(lambda a, b, c: ops.softmax_attention(a, b, c), (q, k, v), check_trace=False)


def test_exporting_is_a_switch_set_once():
    """The flag, not the tracer, picks the plain forms; it restores the backend and itself."""
    q, k, v = torch.randn(1, 1, 9, 4), torch.randn(1, 1, 9, 4), torch.randn(1, 2, 9, 4)
    with ops.exporting():
        assert ops.is_exporting() and ops.get_backend() == "dense"
        out = ops.softmax_attention(q, k, v)
    assert not ops.is_exporting() and ops.get_backend() == "auto"
    torch.testing.assert_close(out, ops.softmax_attention(q, k, v), rtol=1e-5, atol=1e-6)
