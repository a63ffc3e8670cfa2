"""`attnreuse bench report`: markdown + plots from small result files the test writes."""

import json

import pytest

from attnreuse.bench.report import build_report, load_records
from attnreuse.cli import main

MACHINE = dict(cpu="Test CPU", logical_cores=2, platform="linux", python="3.11", torch="2.x", onnxruntime="1.x",
               date_utc="2026-01-01T00:00:00+00:00")  # fmt: skip


def _model(name, runtime, ms, *, macs, baseline=None, family="uniform", **extra):
    return dict(model=name, family=family, baseline=baseline, img_size=224, batch=1, threads=2, runtime=runtime,
                params=1_000_000, macs=macs, latency_ms_median=ms, latency_ms_p90=ms * 1.1,
                throughput_img_per_s=1e3 / ms, peak_bytes=2**20 if runtime == "eager" else None, error=None,
                command="attnreuse bench models uniform_s --threads 2", **MACHINE, **extra)  # fmt: skip


@pytest.fixture
def results(tmp_path):
    from attnreuse.bench.models import add_relative_columns

    models = add_relative_columns([
        _model("uniform_s", "eager", 10.0, macs=200e6, baseline="efficientvit_m1"),
        _model("uniform_s", "ort", 4.0, macs=200e6, baseline="efficientvit_m1", onnx_max_abs_diff=2e-6,
               latency_ms_round_medians=[4.0, 4.0, 5.0]),
        _model("uniform_s", "ort-int8", 2.0, macs=200e6, baseline="efficientvit_m1", onnx_max_abs_diff=2e-6),
        _model("efficientvit_m1", "eager", 20.0, macs=160e6, family="efficientvit_m"),
        _model("efficientvit_m1", "ort", 6.0, macs=160e6, family="efficientvit_m", latency_ms_round_medians=[6.0, 7.0, 6.0]),
        dict(_model("efficientvit_m1", "ort-int8", 1.0, macs=160e6, family="efficientvit_m"), error="RuntimeError: x"),
    ])  # fmt: skip
    ops = [
        dict(op=op, batch=1, tokens=n, qk_heads=hq, v_heads=8, qk_dim=32, v_dim=32, dtype="float32", threads=2,
             latency_ms_median=n * k, latency_ms_p90=n * k * 1.2, peak_bytes=n * n * hq * 4,
             gflops_per_s=10.0, fraction_of_matmul_peak=0.1, machine=MACHINE)
        for op, hq, k in (("sdpa_mha", 8, 0.01), ("reuse", 1, 0.004)) for n in (196, 1024)
    ]  # fmt: skip
    export = dict(config=dict(model="uniform_s", exporter="torchscript", opset=18, threads=2),
                  command="attnreuse export uniform_s --output u.onnx --int8", machine=MACHINE,
                  input_shape=[1, 3, 224, 224], onnx=dict(size_bytes=8 << 20, max_abs_diff=3e-6),
                  int8=dict(mode="static", int8_size_bytes=2 << 20, size_ratio=0.25, fp32_latency_ms_median=4.0,
                            int8_latency_ms_median=2.0, speedup=2.0, top1_agreement=0.995, images=269))  # fmt: skip
    d = tmp_path / "in"
    d.mkdir()
    (d / "models.json").write_text(json.dumps(models))
    (d / "ops.json").write_text(json.dumps(ops))
    (d / "u.export.json").write_text(json.dumps(export))
    (d / "unrelated.json").write_text(json.dumps({"hello": 1}))
    return d


def test_report_has_machine_commands_tables_plots_and_targets(tmp_path, results):
    out = tmp_path / "report"
    md = build_report([results], out).read_text()
    for png in ("latency_vs_params", "latency_vs_macs", "ops_latency_vs_tokens", "ops_memory_vs_tokens",
                "speedup_vs_baseline"):  # fmt: skip
        assert (out / f"{png}.png").stat().st_size > 1000 and f"({png}.png)" in md
    assert "Test CPU (2 logical cores)" in md and "torch 2.x, onnxruntime 1.x" in md and "threads: 2" in md
    assert "attnreuse bench models uniform_s --threads 2" in md
    assert "attnreuse export uniform_s --output u.onnx --int8" in md
    assert f"attnreuse bench report {results} --output {out}" in md
    # uniform_s ort 4 ms vs efficientvit_m1 6 ms: 1.5x measured, 0.8x ideal (MACs 160/200)
    # paired over rounds: 6/4, 7/4, 6/5 -> median 1.5, range 1.2-1.75
    assert "| uniform_s | efficientvit_m1 | 224 | ort | 1.00 | 0.200 | 1.50 | 1.5 (1.2-1.75) | 0.80 | 1.88 |" in md
    assert "| uniform_s @224 ORT / eager <= 0.8 | 0.4 | met | - |" in md
    assert "| uniform_s vs efficientvit_m1 @224 ort >= 1.25x | 1.5 | met | 1.5 (1.2-1.75) |" in md
    assert "| uniform_s 1x3x224x224 static int8 top-1 agreement >= 99% (269 images) | 0.995 | met | - |" in md
    assert "| uniform_s vs efficientvit_m1 @224 eager >= 1.25x | 2 | met | - |" in md
    assert "`efficientvit_m1` @224 ort-int8: RuntimeError: x" in md
    assert "| reuse | 1 | 1024 | 1x32/8x32 |" in md


def test_cli_report_and_bad_inputs(tmp_path, results, capsys):
    out = tmp_path / "r"
    assert main(["bench", "report", str(results / "models.json"), "--output", str(out)]) == 0
    assert (out / "report.md").is_file() and not (out / "ops_latency_vs_tokens.png").exists()
    assert main(["bench", "report", str(tmp_path / "missing.json"), "--output", str(out)]) == 2
    assert "no such results file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds no bench models/bench ops/export records"):
        load_records([results / "unrelated.json"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="output must be a directory"):
        build_report([results], tmp_path / "f")


def test_a_model_measured_in_two_inputs_is_named(tmp_path, results):
    md = build_report([results], tmp_path / "one").read_text()
    assert "Measured more than once" not in md
    again = tmp_path / "again"
    again.mkdir()
    (again / "rerun.json").write_text(json.dumps([_model("uniform_s", "eager", 11.0, macs=200e6, baseline="efficientvit_m1")]))
    md = build_report([results, again], tmp_path / "two").read_text()
    assert "## Measured more than once" in md
    assert f"- `uniform_s` @224 batch 1 eager: `{results / 'models.json'}`, `{again / 'rerun.json'}`" in md
    assert "| uniform_s | 1.00 | 0.200 | 11.00 / 12.10 |" in md  # the models table keeps the last one


def test_targets_not_met_are_reported_as_not_met(tmp_path):
    """Every target missed: the verdict column says so, row by row, and no row says met."""
    from attnreuse.bench.models import add_relative_columns

    models = add_relative_columns([
        _model("uniform_s", "eager", 4.0, macs=200e6, baseline="efficientvit_m1"),
        _model("uniform_s", "ort", 6.0, macs=200e6, baseline="efficientvit_m1", onnx_max_abs_diff=1e-2),
        _model("uniform_s", "ort-int8", 5.0, macs=200e6, baseline="efficientvit_m1"),
        _model("efficientvit_m1", "eager", 4.0, macs=160e6, family="efficientvit_m"),
        _model("efficientvit_m1", "ort", 6.0, macs=160e6, family="efficientvit_m"),
    ])  # fmt: skip
    export = dict(config=dict(model="uniform_s", exporter="torchscript", opset=18, threads=2), machine=MACHINE,
                  command="attnreuse export uniform_s --output u.onnx --int8", input_shape=[1, 3, 224, 224],
                  onnx=dict(size_bytes=8 << 20, max_abs_diff=3e-6),
                  int8=dict(mode="static", int8_size_bytes=4 << 20, size_ratio=0.5, fp32_latency_ms_median=4.0,
                            int8_latency_ms_median=3.6, speedup=1.1, top1_agreement=0.9, images=100))  # fmt: skip
    d = tmp_path / "in"
    d.mkdir()
    (d / "models.json").write_text(json.dumps(models))
    (d / "u.export.json").write_text(json.dumps(export))
    md = build_report([d], tmp_path / "report").read_text()
    missed = [
        "| uniform_s @224 ONNX max abs diff <= 0.0001 | 0.01 | NOT met |",
        "| uniform_s @224 ORT / eager <= 0.8 | 1.5 | NOT met |",
        "| uniform_s vs efficientvit_m1 @224 eager >= 1.25x | 1 | NOT met |",
        "| uniform_s vs efficientvit_m1 @224 ort >= 1.25x | 1 | NOT met |",
        "| uniform_s @224 int8 speed-up over ORT fp32 >= 1.5x | 1.2 | NOT met |",
        "| uniform_s 1x3x224x224 static int8 file <= 0.35x fp32 | 0.5 | NOT met |",
        "| uniform_s 1x3x224x224 static int8 top-1 agreement >= 99% (100 images) | 0.9 | NOT met |",
        "| uniform_s 1x3x224x224 static int8 speed-up (export) >= 1.5x | 1.1 | NOT met |",
    ]
    for line in missed:
        assert line in md, line
    targets = md.split("## Targets", 1)[1]
    assert "| met |" not in targets and targets.count("| NOT met |") == len(missed)


def test_ops_table_shows_paired_columns_only_for_records_that_have_them():
    from attnreuse.bench.report import ops_table

    old = dict(op="reuse", batch=1, tokens=64, qk_heads=1, qk_dim=32, v_heads=8, v_dim=32, latency_ms_median=1.0,
               latency_ms_p90=1.1, peak_bytes=2**20, gflops_per_s=10.0, fraction_of_matmul_peak=0.5,
               speedup_vs_sdpa_mha=1.5, note="")
    assert "paired" not in "\n".join(ops_table([old]))
    new = {**old, "speedup_vs_sdpa_mha_paired": 1.6, "speedup_vs_sdpa_mha_paired_range": [1.4, 1.9],
           "fraction_of_matmul_peak_paired": 0.55, "fraction_of_matmul_peak_paired_range": [0.5, 0.6]}
    lines = ops_table([new, {**old, "tokens": 128}])
    assert "vs sdpa_mha, paired over rounds" in lines[0]
    assert "1.6 (1.4-1.9)" in lines[2] and "0.55 (0.5-0.6)" in lines[2]
    assert lines[3].count("| - |") == 2  # the old record has no paired figures
