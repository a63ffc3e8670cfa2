"""The shared measurement kit: real measurements, validated arguments, atomic records."""

import csv
import json
import time

import pytest
import torch

from attnreuse import measure

MiB = 1 << 20


def test_set_threads_returns_count_in_force():
    before = torch.get_num_threads()
    try:
        assert measure.set_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_threads_rejects_bad_count(bad):
    with pytest.raises(ValueError, match="threads"):
        measure.set_threads(bad)


def test_measure_latency_times_the_call():
    calls = []

    def sleepy():
        calls.append(1)
        time.sleep(0.002)

    stats = measure.measure_latency(sleepy, warmup=2, repeats=5, min_time_s=0.0)
    assert stats.repeats >= 5
    assert len(calls) >= 2 + 5  # warm-up calls run but are not timed
    assert 2.0 <= stats.latency_ms_min <= stats.latency_ms_median <= stats.latency_ms_p90
    assert stats.latency_ms_median < 200


def test_measure_latency_runs_until_min_time_and_repeats():
    calls = []

    def sleepy():
        calls.append(1)
        time.sleep(0.005)

    # each call sleeps >= 5 ms, so 2 samples cannot fill 50 ms: timing goes on until the timed calls do
    stats = measure.measure_latency(sleepy, warmup=0, repeats=2, min_time_s=0.05)
    assert len(calls) >= 10 and stats.repeats >= 2
    # no minimum time: the samples still reach `repeats`
    assert measure.measure_latency(lambda: None, warmup=0, repeats=7, min_time_s=0.0).repeats >= 7


def test_measure_latency_times_on_the_threads_in_force():
    # torch.utils.benchmark.Timer runs on 1 thread unless told otherwise
    before = torch.get_num_threads()
    seen = set()
    try:
        measure.set_threads(2)
        measure.measure_latency(lambda: seen.add(torch.get_num_threads()), warmup=0, repeats=2, min_time_s=0.0)
    finally:
        torch.set_num_threads(before)
    assert seen == {2}


def test_measure_latency_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        measure.measure_latency(lambda: None, repeats=0)


def test_peak_bytes_sees_a_known_allocation():
    def alloc_64mib():
        x = torch.empty(16 * MiB, dtype=torch.float32)  # 64 MiB
        x.fill_(1.0)
        return None

    peak = measure.measure_peak_bytes(alloc_64mib)
    assert 64 * MiB <= peak < 65 * MiB


def test_peak_bytes_is_the_running_maximum_not_the_sum():
    def two_in_turn():
        for _ in range(2):
            x = torch.ones(8 * MiB)  # 32 MiB, freed before the next
            del x

    peak = measure.measure_peak_bytes(two_in_turn)
    assert 32 * MiB <= peak < 40 * MiB


def test_peak_bytes_of_nothing_is_small():
    assert measure.measure_peak_bytes(lambda: None) < MiB


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_bytes_cuda():
    peak = measure.measure_peak_bytes(lambda: torch.ones(16 * MiB, device="cuda"), device="cuda")
    assert peak >= 64 * MiB


def test_machine_record_has_tags_and_versions():
    record = measure.machine_record(threads=2, dtype="float32")
    assert record["threads"] == 2 and record["dtype"] == "float32"
    assert record["torch"] == torch.__version__
    assert record["logical_cores"] >= 1 and record["cpu"]
    assert "onnxruntime" in record and record["date_utc"].startswith("20")
    json.dumps(record)


def test_matmul_peak_is_positive_and_restores_threads():
    before = torch.get_num_threads()
    gflops = measure.matmul_peak_gflops(1, size=256, repeats=2)
    assert 0.1 < gflops < 1e5
    assert torch.get_num_threads() == before


def test_write_records_json_and_csv(tmp_path):
    records = [
        {"op": "sdpa", "tokens": 196, "latency_ms_median": 1.5},
        {"op": "reuse", "tokens": 196, "machine": {"cpu": "x"}, "extra": None},
    ]
    measure.write_records(tmp_path / "r.json", records)
    assert json.loads((tmp_path / "r.json").read_text()) == records
    measure.write_records(tmp_path / "r.csv", records)
    with open(tmp_path / "r.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["op"] for r in rows] == ["sdpa", "reuse"]
    assert list(rows[0]) == ["op", "tokens", "latency_ms_median", "machine", "extra"]
    assert json.loads(rows[1]["machine"]) == {"cpu": "x"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_measure_interleaved_pools_rounds_and_hands_back_failures():
    order = []

    def fast():
        order.append("fast")

    def broken():
        order.append("broken")
        raise RuntimeError("no")

    results = measure.measure_interleaved({"a": fast, "b": broken}, rounds=3, warmup=1, repeats=6)
    assert results["a"].repeats >= 6  # at least 2 a round, 3 rounds pooled
    assert isinstance(results["b"], RuntimeError)
    assert order.count("broken") == 1  # dropped after it failed
    # Rounds interleave: the fast call's blocks come before and after the broken call's one attempt.
    assert order.index("broken") < len(order) - 1 and order[0] == "fast"
    with pytest.raises(ValueError, match="rounds"):
        measure.measure_interleaved({"a": fast}, rounds=0, warmup=0, repeats=1)


def test_measure_interleaved_reverses_odd_rounds_and_keeps_round_medians(monkeypatch):
    clock, blocks, slow = [0.0], [], [1]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    real = measure.measure_latency

    def block(fn, **kwargs):  # one call's block of one round
        blocks.append(fn.__name__)
        slow[0] = 3 if len(blocks) > 4 else 1  # the machine slows down after two rounds
        return real(fn, **kwargs)

    monkeypatch.setattr(measure, "measure_latency", block)

    def call(name, cost_s):
        def f():
            clock[0] += cost_s * slow[0]

        f.__name__ = name
        return f

    medians = {}
    results = measure.measure_interleaved({"a": call("a", 0.002), "b": call("b", 0.001)}, rounds=4, warmup=0,
                                         repeats=12, round_medians_ms=medians)  # fmt: skip
    assert blocks == ["a", "b", "b", "a", "a", "b", "b", "a"]  # a b | b a | a b | b a: neighbours stay adjacent
    assert [len(medians[k]) for k in "ab"] == [4, 4] and results["a"].repeats >= 12
    assert medians["a"] == pytest.approx([2.0, 2.0, 6.0, 6.0]) and medians["b"] == pytest.approx([1.0, 1.0, 3.0, 3.0])
    ratio, low, high = measure.paired_ratio(medians["a"], medians["b"])
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.0))  # the slow-down cancels round by round


def test_paired_ratio_checks_its_inputs():
    assert measure.paired_ratio([4.0, 6.0, 9.0], [2.0, 2.0, 3.0]) == (3.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="equally long"):
        measure.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        measure.paired_ratio([], [])


def test_timing_prints_nothing_of_its_own_to_stderr():
    """A CPU-only machine with a CUDA build of torch: importing torch's benchmark Timer used to log
    "No CUDA runtime is found, using CUDA_HOME=..." once per run, in the middle of a table."""
    import subprocess
    import sys

    code = "from attnreuse import measure; measure.measure_latency(lambda: None, warmup=0, repeats=1, min_time_s=0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
