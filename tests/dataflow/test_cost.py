"""The cost model: byte conservation, footprints within the buffer, monotonicity, hand-computed cases."""

from __future__ import annotations

import dataclasses

import pytest

from attnreuse.dataflow.assumptions import SETTINGS, default_for

from attnreuse.dataflow import DATAFLOWS, HARDWARE, MODELS, Hardware, attention_layer, compare, evaluate

# One MAC and one byte a cycle at 1 Hz, softmax free, a buffer large enough for everything: the
# numbers below can be written by hand.
UNIT = Hardware(
    name="unit",
    macs_per_cycle=1,
    clock_hz=1.0,
    buffer_bytes=1 << 30,
    offchip_bytes_per_s=1.0,
    vector_ops_per_cycle=1e12,
    vector_overlaps_mac=True,
    elem_bytes=1,
    mac_j=1.0,
    onchip_byte_j=0.0,
    offchip_byte_j=10.0,
)

SHAPES = [  # batch, value heads, map sharing, N, dk, dv
    (1, 1, 1, 4, 2, 2),
    (2, 4, 1, 16, 8, 4),
    (1, 4, 4, 32, 4, 8),
    (3, 6, 2, 8, 16, 16),
]


def _layer(b, h, g, n, dk, dv):
    return attention_layer(batch=b, heads=h, seq_len=n, dk=dk, dv=dv, map_sharing=g)


@pytest.mark.parametrize("shape", SHAPES)
def test_baseline_counts_every_operand_once_and_scores_four_times(shape):
    b, h, g, n, dk, dv = shape
    hq = h // g
    q = k = b * hq * n * dk
    v = o = b * h * n * dv
    scores = b * hq * n * n  # written by Logit, read + written by softmax, read by Attend
    res = evaluate(_layer(*shape), UNIT, "baseline")
    assert res.offchip_bytes == q + k + v + o + 4 * scores
    assert res.macs == b * hq * n * n * dk + b * h * n * n * dv


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dataflow", ["flat-batch", "flat-head", "flat", "taylor"])
def test_fused_dataflows_move_inputs_and_output_once(shape, dataflow):
    b, h, g, n, dk, dv = shape
    hq = h // g
    res = evaluate(_layer(*shape), UNIT, dataflow)
    assert res.fits
    assert res.offchip_bytes == 2 * b * hq * n * dk + 2 * b * h * n * dv


def test_model_scope_adds_each_matmul_operand_and_result_once():
    w = dataclasses.replace(MODELS["bert-base"], depth=2, batch=2, seq_len=8)
    rows, c, f, qkv = 2 * 8, 768, 3072, 3 * 768
    matmuls = [(rows, c, qkv), (rows, c, c), (rows, c, f), (rows, f, c)]
    gemm = sum(r * i + i * o + r * o for r, i, o in matmuls)
    scores = 2 * 12 * 8 * 8
    attn = 4 * rows * c  # Q, K, V in, O out
    res = evaluate(w, UNIT, "baseline")
    assert res.offchip_bytes == 2 * (gemm + attn + 4 * scores)
    assert evaluate(w, UNIT, "flat").offchip_bytes == 2 * (gemm + attn)


def test_hand_computed_tiny_layer():
    """B=1, H=1, N=4, dk=dv=2, one byte a cycle: the baseline moves 96 bytes, FLAT 32."""
    w = _layer(1, 1, 1, 4, 2, 2)
    base, head, taylor = compare(w, UNIT, ("baseline", "flat-head", "taylor"))
    # Logit: 32 MACs and 8 + 8 + 16 bytes; softmax: 32 bytes; Attend: 32 MACs and 16 + 8 + 8 bytes.
    assert base.cycles == 32 + 32 + 32
    assert head.offchip_bytes == 32 and head.macs == 64 and head.cycles == 64
    assert head.onchip_peak_bytes == 2 * (4 * 4 + 4 * 4) + 16  # double-buffered Q,O,K,V + scores
    assert head.speedup_vs_baseline == pytest.approx(1.5)
    assert head.energy_j == pytest.approx((64 + 4 * 16) * 1.0 + 32 * 10.0)  # MACs + softmax ops, off-chip
    assert taylor.macs == 4 * 2 * 2 * 2 + 4 * 2  # K^T V, Q G, Q k_sum
    assert taylor.offchip_bytes == 32
    assert base.bound == "memory" and head.bound == "compute"


def test_shared_map_is_read_once_for_all_value_heads():
    per_head = evaluate(_layer(1, 4, 1, 64, 8, 8), UNIT, "baseline")
    shared = evaluate(_layer(1, 4, 4, 64, 8, 8), UNIT, "baseline")
    assert per_head.offchip_bytes - shared.offchip_bytes == 4 * (3 * 64 * 64) + 3 * 2 * 64 * 8


@pytest.mark.parametrize("hw_name", sorted(HARDWARE))
@pytest.mark.parametrize("n", [64, 1024, 16384])
@pytest.mark.parametrize("kib", [16, 256, 4096])
def test_footprint_never_exceeds_the_buffer_when_it_fits(hw_name, n, kib):
    hw = HARDWARE[hw_name].with_buffer(kib * 1024)
    w = MODELS["bert-base"].with_seq(n, 2)
    for scope in (w, w.attention()):
        for dataflow in DATAFLOWS:
            res = evaluate(scope, hw, dataflow)
            if res.fits:
                assert res.onchip_peak_bytes <= hw.buffer_bytes, (dataflow, res.tile)


def test_no_fused_tile_fits_falls_back_to_baseline_costs():
    hw = HARDWARE["flat-edge"].with_buffer(2048)
    w = _layer(1, 2, 1, 4096, 64, 64)
    base, head = evaluate(w, hw, "baseline"), evaluate(w, hw, "flat-head")
    assert not head.fused and head.tile == "per-operator: no fused tile fits"
    assert head.time_s == base.time_s and head.offchip_bytes == base.offchip_bytes


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_time_and_traffic_grow_with_sequence_length(dataflow):
    hw = HARDWARE["flat-edge"]
    results = [evaluate(_layer(4, 8, 1, n, 64, 64), hw, dataflow) for n in (128, 512, 2048, 8192)]
    for a, b in zip(results, results[1:]):
        assert b.time_s > a.time_s and b.offchip_bytes > a.offchip_bytes and b.macs > a.macs


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_a_larger_buffer_never_makes_a_dataflow_slower(dataflow):
    w = MODELS["bert-base"].with_seq(4096, 4).attention()
    times = [evaluate(w, HARDWARE["flat-edge"].with_buffer(kib * 1024), dataflow).time_s for kib in (64, 512, 4096, 65536)]
    assert all(b <= a for a, b in zip(times, times[1:]))


def test_flat_removes_the_quadratic_traffic_when_kv_fit():
    hw = HARDWARE["flat-cloud"]
    small, large = (evaluate(_layer(64, 12, 1, n, 64, 64), hw, "flat") for n in (1024, 4096))
    assert large.offchip_bytes == pytest.approx(4 * small.offchip_bytes)  # linear in N
    base_small, base_large = (evaluate(_layer(64, 12, 1, n, 64, 64), hw, "baseline") for n in (1024, 4096))
    assert base_large.offchip_bytes / base_small.offchip_bytes > 14  # quadratic term dominates


def test_flat_keeps_per_operator_execution_where_fusion_loses():
    """Full score rows of 64K tokens leave room for 2 rows in 512 KiB: K and V would be streamed
    32K times, far more traffic than spilling the scores once."""
    w = MODELS["bert-base"].with_seq(65536, 1).attention()
    stream = SETTINGS["attnreuse"]  # K/V re-streamed; scores never spilled by a fused tile
    flat = evaluate(w, HARDWARE["flat-edge"], "flat", stream)
    base = evaluate(w, HARDWARE["flat-edge"], "baseline", stream)
    assert not flat.fused and "slower" in flat.tile
    assert flat.time_s == base.time_s
    assert evaluate(w, HARDWARE["flat-edge"].with_buffer(64 << 20), "flat").fused


def test_flat_speedup_grows_with_n_on_the_cloud_for_bert():
    w = MODELS["bert-base"]
    speedups = [compare(w.with_seq(n), HARDWARE["flat-cloud"], ("baseline", "flat"))[1].speedup_vs_baseline
                for n in (512, 2048, 8192, 32768)]
    assert all(b > a for a, b in zip(speedups, speedups[1:])) and speedups[0] > 1


def test_bad_dataflow_and_types_are_rejected():
    w = _layer(1, 1, 1, 4, 2, 2)
    with pytest.raises(ValueError, match="dataflow must be one of"):
        evaluate(w, UNIT, "fused")
    with pytest.raises(TypeError, match="hw must be a Hardware"):
        evaluate(w, "flat-edge", "flat")
    with pytest.raises(TypeError, match="w must be a Workload"):
        evaluate("bert-base", UNIT, "flat")


def test_small_output_tiles_idle_part_of_the_pe_array():
    """4x4 PEs, N=4, dk=dv=2, one head, head granularity: Logit's [4, 4] output fills the array
    (32 MACs / 16 = 2 cycles); Attend's [4, 2] output fills half of it (32 MACs / 8 = 4 cycles)."""
    hw = dataclasses.replace(UNIT, macs_per_cycle=16, pe_rows=4, pe_cols=4, offchip_bytes_per_s=1e12)
    assert evaluate(_layer(1, 1, 1, 4, 2, 2), hw, "flat-head", SETTINGS["attnreuse"]).compute_cycles == 2 + 4
    with pytest.raises(ValueError, match="pe_rows x pe_cols must equal macs_per_cycle=16"):
        dataclasses.replace(hw, pe_cols=2)


def test_the_default_setting_follows_the_hardware():
    """FLAT's PE-array presets are costed as FuseMax re-modelled them; a CPU as this library does
    (no 1-D softmax unit to model). Passing nothing equals passing that setting."""
    assert default_for(HARDWARE["flat-edge"]) == SETTINGS["fusemax"] == default_for(HARDWARE["flat-cloud"])
    assert default_for(HARDWARE["jetson-orin"]) == SETTINGS["attnreuse"]
    w = MODELS["bert-base"].with_seq(65536, 1).attention()
    assert evaluate(w, HARDWARE["flat-edge"], "flat") == evaluate(w, HARDWARE["flat-edge"], "flat", SETTINGS["fusemax"])
    assert evaluate(w, HARDWARE["flat-edge"], "flat").fused  # spills part of its scores instead
