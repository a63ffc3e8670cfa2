"""Edges of the sparse operators that random inputs never hit: the defaults agree with the
reference's, and an entry exactly at the threshold is kept (`>=`). Written against mutants mutmut
left alive (docs/testing.md)."""

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
def test_an_entry_at_the_threshold_is_kept(name):
    """q = 0: every map entry is exactly 1/M = 0.25, the threshold; all are kept."""
    _, k, v = qkv(1, 1, 1, 3, 4, 2, 2, requires_grad=False)
    q = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    out = getattr(ops, name)(q, k, v, threshold=0.25)
    ref = getattr(reference, name)(q, k, v, threshold=0.25)
    assert_close(name, ref, out, 1e-12, 1e-12)
    if name == "sparse_attention":
        assert_close("kept map", v.mean(-2, keepdim=True).expand_as(out), out, 1e-12, 1e-12)
