"""`attnreuse bench ops`: the quick sweep end to end, skipping rules, config validation."""

import csv
import json

import pytest
import torch

from attnreuse.bench import ops as bench_ops
from attnreuse.cli import main

FIELDS = {
    "op", "batch", "tokens", "qk_heads", "v_heads", "qk_dim", "v_dim", "dtype", "threads",
    "latency_ms_median", "latency_ms_p90", "peak_bytes", "gflops_per_s", "fraction_of_matmul_peak", "machine",
}


def test_quick_sweep_writes_json_csv_plot_and_config(tmp_path, capsys):
    out = tmp_path / "ops.json"
    argv = ["bench", "ops", "--quick", "--threads", "1", "--tokens", "32", "64", "--batch", "1", "2",
            "--ops", "sdpa_mha", "reuse", "dense_mha", "taylor", "--shapes", "vit", "uniform",
            "--json", str(out), "--csv", str(tmp_path / "ops.csv"), "--plot", str(tmp_path / "ops.png")]
    assert main(argv) == 0
    records = json.loads(out.read_text())
    # 2 tokens x 2 batches x (3 multi-head ops + reuse on 2 widths)
    assert len(records) == 2 * 2 * 5
    for r in records:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["latency_ms_median"] > 0 and r["latency_ms_p90"] >= r["latency_ms_median"]
        assert r["peak_bytes"] > 0 and r["gflops_per_s"] > 0 and 0 < r["fraction_of_matmul_peak"]
        assert r["threads"] == 1 and r["dtype"] == "float32" and r["machine"]["matmul_peak_gflops"] > 0
    reuse = {(r["qk_dim"], r["v_heads"]) for r in records if r["op"] == "reuse"}
    assert reuse == {(32, 8), (64, 8)}
    assert all(r["speedup_vs_sdpa_mha"] == 1.0 for r in records if r["op"] == "sdpa_mha")
    # a materialised map of b x 8 x N x N floats is the biggest extra allocation of dense_mha
    dense = next(r for r in records if r["op"] == "dense_mha" and r["tokens"] == 64 and r["batch"] == 2)
    assert dense["peak_bytes"] >= 2 * 8 * 64 * 64 * 4
    with open(tmp_path / "ops.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(records)
    assert (tmp_path / "ops.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((tmp_path / "ops.config.json").read_text())
    assert config["tokens"] == [32, 64] and config["threads"] == 1
    assert all(r["config"] == config for r in records)  # each record says how it was measured
    table = capsys.readouterr().out
    assert "median_ms" in table and "reuse" in table and "matmul peak" in table


def test_skips_are_noted_not_crashed():
    config = bench_ops.OpsBenchConfig(
        ops=("dense_mha", "reuse"), shapes=("vit",), tokens=(32,), batch=(1, 2), threads=1,
        warmup=0, repeats=1, min_time_s=0.0, max_batch_tokens=40, max_dense_bytes=1000, matmul_size=64,
    )
    records = bench_ops.run_bench(config)
    notes = {(r["op"], r["batch"]): r["note"] for r in records}
    assert "max_dense_bytes" in notes[("dense_mha", 1)]
    assert notes[("reuse", 1)] == ""
    assert "max_batch_tokens" in notes[("reuse", 2)] and "max_batch_tokens" in notes[("dense_mha", 2)]
    skipped = [r for r in records if r["note"]]
    assert all(r["latency_ms_median"] is None and r["peak_bytes"] is None for r in skipped)
    assert "skipped" in bench_ops.format_table(records)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ops", ("flash",), "ops must be a non-empty list"),
        ("shapes", (), "shapes must be a non-empty list"),
        ("tokens", (196, 0), r"tokens must be a non-empty list of positive ints, got \[196, 0\]"),
        ("batch", (1.5,), "batch must be"),
        ("dtype", "float16", "dtype must be one of"),
        ("threads", 0, "threads must be a positive int, got 0"),
        ("warmup", -1, "warmup must be an int >= 0"),
        ("min_time_s", float("inf"), "min_time_s must be a finite number"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        bench_ops.OpsBenchConfig(**{field: value})


def test_cli_reports_bad_values_in_one_line(capsys):
    assert main(["bench", "ops", "--quick", "--batch", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnreuse bench ops: error: --batch must be") and err.count("\n") == 1


def test_bfloat16_sweep_times_sdpa_in_bf16_and_says_how_it_ran(monkeypatch):
    from attnreuse import cpu_units

    config = bench_ops.OpsBenchConfig(
        ops=("sdpa_mha", "reuse"), shapes=("vit",), tokens=(32,), batch=(1,), threads=1, dtype="bfloat16",
        warmup=0, repeats=1, min_time_s=0.0, matmul_size=64,
    )
    records = bench_ops.run_bench(config)
    verdict = cpu_units.dtype_support("bfloat16")
    assert {r["op"] for r in records} == {"sdpa_mha", "reuse"}
    assert all(r["dtype"] == "bfloat16" and r["dtype_execution"] == verdict["execution"] for r in records)
    assert records[0]["machine"]["dtype_units"] == verdict["units"]
    footer = bench_ops.format_table(records).splitlines()[-1]
    assert "bfloat16" in footer and (verdict["execution"] != "emulated" or "EMULATED" in footer)
    emulated = {**records[0]["machine"], "dtype_execution": "emulated", "dtype_units": []}
    native = {**records[0]["machine"], "dtype_execution": "native", "dtype_units": ["amx_bf16"]}
    assert "EMULATED" in bench_ops.dtype_label(emulated) and bench_ops.dtype_label(native) == "bfloat16 (native: amx_bf16)"


def test_rounds_pair_each_ratio_with_blocks_timed_side_by_side(monkeypatch):
    """With rounds, every op of one (batch, N) and the matmul peak are timed in turn: each record
    holds one median per round, and its paired ratios are the median over rounds of per-round
    ratios, computed from those medians (checked here against the records' own round medians)."""
    import statistics

    from attnreuse import measure

    seen_rounds = []
    real = measure.measure_interleaved

    def spy(calls, **kw):
        seen_rounds.append((len(calls), kw["rounds"]))
        return real(calls, **kw)

    monkeypatch.setattr(measure, "measure_interleaved", spy)
    config = bench_ops.OpsBenchConfig(
        ops=("sdpa_mha", "reuse", "dense_mha"), shapes=("vit",), tokens=(32, 48), batch=(1,), threads=1,
        warmup=0, repeats=3, rounds=3, min_time_s=0.0, matmul_size=64,
    )
    records = bench_ops.run_bench(config)
    assert seen_rounds == [(4, 3), (4, 3)]  # per N: three ops and the matmul, three rounds
    for n in (32, 48):
        group = {r["op"]: r for r in records if r["tokens"] == n}
        base = group["sdpa_mha"]["latency_ms_round_medians"]
        for op, r in group.items():
            assert r["rounds"] == 3 and len(r["latency_ms_round_medians"]) == 3
            ratios = [b / t for b, t in zip(base, r["latency_ms_round_medians"])]
            # the record rounds the ratio to 3 decimals (and each round's median to the nanosecond)
            assert r["speedup_vs_sdpa_mha_paired"] == pytest.approx(statistics.median(ratios), rel=1e-3, abs=6e-4)
            low, high = r["speedup_vs_sdpa_mha_paired_range"]
            assert low <= r["speedup_vs_sdpa_mha_paired"] <= high
            assert 0 < r["fraction_of_matmul_peak_paired"]
            lo, hi = r["fraction_of_matmul_peak_paired_range"]
            assert lo <= r["fraction_of_matmul_peak_paired"] <= hi
        assert group["sdpa_mha"]["speedup_vs_sdpa_mha_paired"] == 1.0
    table = bench_ops.format_table(records)
    assert "vs_sdpa_p" in table and "median over 3 interleaved round(s)" in table


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds must be a positive int, got 0"):
        bench_ops.OpsBenchConfig(rounds=0)


@pytest.mark.parametrize("shape", ["vit", "uniform", "whisper"])
def test_every_softmax_op_computes_the_same_attention(shape):
    """What is timed is attention: each exact op's callable gives the float64 reference's output
    on its case's inputs (SDPA fed Reuse Attention's shapes included: one wide value head; the
    map-sharing ops: the first layer's output and map, a later layer's A.V with that map)."""
    from attnreuse.ops import reference

    for op in ("sdpa_mha", "dense_mha", "flat_mha", "reuse", "sdpa_reuse", "map_mha", "apply_mha"):
        case = bench_ops._Case(op, 2, 40, bench_ops.SHAPES[shape][bench_ops.OPS[op]])
        hq, hv, dk, dv = case.widths
        gen = torch.Generator().manual_seed(0)  # the inputs `_callable` draws
        q, k, v = (torch.randn(2, h, 40, d, generator=gen) for h, d in ((hq, dk), (hq, dk), (hv, dv)))
        out = bench_ops._callable(case, torch.float32)()
        if op == "map_mha":
            out, attn = out
            torch.testing.assert_close(attn.double(), reference.attention_map(q.double(), k.double()),
                                       atol=1e-6, rtol=1e-5)
        want = reference.softmax_attention(q.double(), k.double(), v.double())
        assert out.shape == (2, hv, 40, dv)
        torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5, msg=op)


def test_map_sharing_ops_are_skipped_by_their_map_bytes():
    """map_mha and apply_mha hold one [B, H, N, N] map in the run's dtype (dense_mha two, float32
    at least): 1 x 8 x 32 x 32 float32 is 32 KiB, so a 40000-byte budget runs them and skips dense_mha."""
    config = bench_ops.OpsBenchConfig(
        ops=("dense_mha", "map_mha", "apply_mha"), shapes=("vit",), tokens=(32,), batch=(1,), threads=1,
        warmup=0, repeats=1, min_time_s=0.0, max_dense_bytes=40000, matmul_size=64,
    )
    records = {r["op"]: r for r in bench_ops.run_bench(config)}
    assert "dense_mha's maps need" in records["dense_mha"]["note"]
    assert records["map_mha"]["note"] == "" and records["apply_mha"]["note"] == ""
    # the map the first layer writes counts in its peak; a later layer holds only its output (the
    # map [1, 8, 32, 32] and the output [1, 8, 32, 32] are 32 KiB each)
    assert records["map_mha"]["peak_bytes"] >= 2 * 32768 > records["apply_mha"]["peak_bytes"]
    # apply_mha is A.V alone: half of an exact layer's products at these widths
    mha, apply = (bench_ops._flops(bench_ops._Case(op, 1, 32, (8, 8, 32, 32))) for op in ("map_mha", "apply_mha"))
    assert apply * 2 == mha


def test_sharing_lines_pair_the_group_per_round():
    """A group of G layers against G SDPA layers, round by round: with SDPA at 10 ms, the map
    writer at 15 and A.V alone at 5, two layers take 20 against 20 (1.00x), three 25 against 30
    (1.20x); a slow round (everything 2x) gives the same ratios, so the median does too."""
    assert bench_ops.group_speedup([10.0, 20.0, 10.0], [15.0, 30.0, 15.0], [5.0, 10.0, 5.0], 2) == pytest.approx(1.0)
    assert bench_ops.group_speedup([10.0, 20.0], [15.0, 30.0], [5.0, 10.0], 3) == pytest.approx(1.2)

    def rec(op, rounds, tokens=64):
        return {"op": op, "batch": 1, "tokens": tokens, "qk_heads": 8, "qk_dim": 64, "latency_ms_round_medians": rounds}

    records = [rec("sdpa_mha", [10.0]), rec("map_mha", [15.0]), rec("apply_mha", [5.0]), rec("dense_mha", [10.0]),
               rec("sdpa_mha", [1.0], 32), rec("map_mha", [1.0], 32)]
    lines = bench_ops.sharing_lines(records)
    assert lines == [  # N=32 has no apply_mha: no line
        "map sharing, attention alone (8x64, batch 1, N=64), map_mha + apply_mha per group vs sdpa_mha per layer: "
        "2 layers 1.00x, 3 layers 1.20x",
        "map sharing, attention alone (8x64, batch 1, N=64), dense_mha + apply_mha per group vs sdpa_mha per layer: "
        "2 layers 1.33x, 3 layers 1.50x",
    ]


def test_bench_report_has_the_sharing_table_only_with_its_ops():
    from attnreuse.bench import report

    def rec(op, rounds, paired):
        return {"op": op, "batch": 1, "tokens": 64, "qk_heads": 8, "qk_dim": 64, "latency_ms_round_medians": rounds,
                "speedup_vs_sdpa_mha_paired": paired}

    records = [rec("sdpa_mha", [10.0], 1.0), rec("map_mha", [15.0], 0.667), rec("apply_mha", [5.0], 2.0)]
    assert report.sharing_table(records) == [
        "| N | batch | heads x dim | map writer | writer vs sdpa_mha | apply_mha vs sdpa_mha | group of 2 vs sdpa_mha "
        "| group of 3 vs sdpa_mha |", "|---|---|---|---|---|---|---|---|",
        "| 64 | 1 | 8x64 | map_mha | 0.67 | 2.00 | 1.00x | 1.20x |"]
    assert report.sharing_table(records[:2]) == []  # no apply_mha: nothing to pair
