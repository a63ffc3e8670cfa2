"""The pooled CPU memory of returned maps (`ops._workspace`): reused only when no tensor, view or
autograd record of the previous map is left, bounded, and invisible in the results."""

import pytest
import torch

from attnreuse import ops
from attnreuse.ops import _workspace
from attnreuse.ops._workspace import (
    MIN_BYTES,
    map_buffer,
    release_map_workspace,
    workspace_bytes,
)

pytestmark = pytest.mark.skipif(_workspace._use_count is None, reason="this torch has no storage use count")

BIG = (1, 1024, MIN_BYTES // 4096)  # float32: exactly MIN_BYTES
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _empty_pool():
    release_map_workspace()
    yield
    release_map_workspace()


def test_a_dropped_map_is_reused():
    first = map_buffer(BIG, torch.float32, CPU)
    ptr = first.data_ptr()
    del first
    again = map_buffer(BIG, torch.float32, CPU)
    assert again.data_ptr() == ptr
    assert again.shape == BIG and again.is_contiguous() and again.dtype == torch.float32
    assert workspace_bytes() == MIN_BYTES


def test_a_live_map_or_any_view_of_it_is_never_handed_out():
    first = map_buffer(BIG, torch.float32, CPU)
    view = first[0, :3]
    del first
    second = map_buffer(BIG, torch.float32, CPU)
    assert second.untyped_storage().data_ptr() != view.untyped_storage().data_ptr()
    assert workspace_bytes() == 2 * MIN_BYTES


def test_small_maps_and_other_devices_are_plain_allocations():
    small = map_buffer((1, 8, 8), torch.float32, CPU)
    assert small.shape == (1, 8, 8)
    elsewhere = map_buffer(BIG, torch.float32, torch.device("meta"))
    assert elsewhere.is_meta and elsewhere.shape == BIG
    assert workspace_bytes() == 0


def test_a_larger_buffer_serves_a_smaller_map_and_a_miss_replaces_the_idle_ones():
    big = map_buffer((2, *BIG[1:]), torch.float32, CPU)
    ptr = big.data_ptr()
    del big
    smaller = map_buffer(BIG, torch.float64, CPU)  # same bytes as (2, ...) float32
    assert smaller.data_ptr() == ptr and smaller.dtype == torch.float64
    live = [map_buffer(BIG, torch.float32, CPU) for _ in range(3)]
    assert len(_workspace._pool) == 4  # as many as were alive at once
    del live, smaller
    larger = map_buffer((3, *BIG[1:]), torch.float32, CPU)  # fits no idle buffer: they go
    assert len(_workspace._pool) == 1 and larger.shape[0] == 3
    assert workspace_bytes() == 3 * MIN_BYTES
    release_map_workspace()
    assert workspace_bytes() == 0


def test_maps_returned_by_the_operator_stay_intact_while_held():
    """Two maps held at once (a share group's map while the next group writes its own) and a map
    saved for backward: each keeps its values and the gradients match the dense path."""
    torch.manual_seed(0)
    N = 1024
    q, k, v = (torch.randn(1, 2, N, 8) for _ in range(3))
    with torch.no_grad(), ops.use_backend("tiled"):
        _, first = ops.softmax_attention(q, k, v, return_map=True)
        want = first.clone()
        _, second = ops.softmax_attention(k, q, v, return_map=True)
        assert first.data_ptr() != second.data_ptr()
        torch.testing.assert_close(first, want, rtol=0, atol=0)
        del first, second
        _, third = ops.softmax_attention(q, k, v, return_map=True)
        torch.testing.assert_close(third, want)
    grads = {}
    for backend in ("tiled", "dense"):
        qg = q.clone().requires_grad_()
        with ops.use_backend(backend):
            out, attn = ops.softmax_attention(qg, k, v, return_map=True)
            loss = (out.square().sum() + (attn * attn).sum()).detach()
            ops.softmax_attention(k, q, v, return_map=True)  # may take a pooled buffer
            (out.square().sum() + (attn * attn).sum()).backward()
        grads[backend] = (loss, qg.grad)
    torch.testing.assert_close(grads["tiled"][0], grads["dense"][0])
    torch.testing.assert_close(grads["tiled"][1], grads["dense"][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_dense_map_in_place_matches_the_recorded_path_and_the_reference(mode):
    """Without a gradient the dense map is computed in place in pooled memory (same kernels):
    it equals the out-of-place form bit for bit and the float64 reference, bias included."""
    torch.manual_seed(1)
    q, k = torch.randn(2, 3, 700, 16), torch.randn(2, 3, 800, 16)  # 2 x 3 x 700 x 800: over MIN_BYTES
    bias = torch.randn(2, 1, 1, 800)
    recorded = ops.attention_map(q.requires_grad_(), k, bias=bias).detach()
    q = q.detach()
    with getattr(torch, mode)():
        pooled = ops.attention_map(q, k, bias=bias)
    assert workspace_bytes() >= pooled.numel() * 4
    torch.testing.assert_close(pooled, recorded, rtol=0, atol=0)
    want = ops.reference.attention_map(q.double(), k.double(), bias=bias.double())
    torch.testing.assert_close(pooled.double(), want, rtol=1e-5, atol=1e-6)


def test_peak_memory_counts_a_map_written_into_pooled_memory():
    """A warm call reuses a pooled map; `measure_peak_bytes` still counts it (it releases the pool)."""
    from attnreuse.measure import measure_peak_bytes

    q, k = torch.randn(1, 2, 1024, 8), torch.randn(1, 2, 1024, 8)
    map_bytes = 2 * 1024 * 1024 * 4
    with torch.no_grad():
        ops.attention_map(q, k)  # warm: the pool now holds a buffer that fits
        assert workspace_bytes() >= map_bytes
        assert measure_peak_bytes(lambda: ops.attention_map(q, k)) >= map_bytes
