"""Part marks inside the sequence cores: off by default, recorded on demand, same results."""

import contextlib

import pytest
import torch

from attnreuse import ops
from attnreuse.layers import parts
from attnreuse.layers.token_attention import MapSelfAttention, SequencePhi, SharedMapSelfAttention, TaylorSelfAttention
from attnreuse.measure import PartTimer


def _names(fn):
    seen = []

    def recorder(name):
        seen.append(name)
        return contextlib.nullcontext()

    with parts.recording(recorder):
        fn()
    return seen


def test_cores_mark_their_steps():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 16)
    mha = MapSelfAttention(16, 4)
    assert _names(lambda: mha(x)) == ["core"]  # fused / tiled: one step
    with ops.use_backend("dense"):
        assert _names(lambda: mha(x)) == ["scores_softmax", "av"]
        assert _names(lambda: mha(x, return_map=True)) == ["scores_softmax", "av"]
    assert _names(lambda: mha(x, return_map=True)) == ["core"]  # the FLAT tiles write the map
    attn = mha(x, return_map=True)[1]
    assert _names(lambda: SharedMapSelfAttention(16, 4)(x, attn)) == ["av"]
    assert _names(lambda: TaylorSelfAttention(16, 4)(x)) == ["core"]
    assert _names(lambda: SequencePhi(16)(x)) == ["core"]


def test_dense_steps_equal_the_fused_path():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 16)
    mha = MapSelfAttention(16, 4)
    with torch.no_grad():
        fused = mha(x)
        with ops.use_backend("dense"):
            dense = mha(x)
    torch.testing.assert_close(dense, fused, rtol=0, atol=1e-6)


def test_recordings_do_not_nest_and_end_cleanly():
    with parts.recording(lambda name: contextlib.nullcontext()):
        with pytest.raises(RuntimeError, match="do not nest"):
            with parts.recording(lambda name: contextlib.nullcontext()):
                pass
    assert parts.part("x") is parts.part("y")  # no recorder left behind


def test_part_timer_attributes_modules_and_steps_to_layers():
    """Exclusive times from marks: the attention module's own time excludes its projection and its
    steps, and with start()/stop() every part, "rest" included, adds up to the marked span."""
    import time

    torch.manual_seed(0)
    x = torch.randn(1, 32, 16)
    cores = [MapSelfAttention(16, 4), MapSelfAttention(16, 4)]
    timer = PartTimer()
    for i, core in enumerate(cores):
        timer.watch(core, "attention", layer=i)
        timer.watch(core.query, "qk_proj", layer=i)
    with torch.no_grad(), ops.use_backend("dense"), parts.recording(timer):
        t0 = time.perf_counter()
        timer.start()
        for core in cores:
            core(x)
        torch.tanh(x)  # outside every part: "rest"
        timer.stop()
        wall = time.perf_counter() - t0
    keys = set(timer.totals_s)
    assert {("attention", 0), ("qk_proj", 1), ("scores_softmax", 0), ("av", 1), ("rest", None)} <= keys
    total = sum(timer.totals_s.values())
    assert 0 < total <= wall and all(v >= 0 for v in timer.totals_s.values())
    timer.remove()
    timer.reset()
    with torch.no_grad():
        cores[0](x)
    assert timer.part_ms() == {}
