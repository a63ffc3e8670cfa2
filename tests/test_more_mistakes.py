"""More user mistakes (the sweep after tests/test_failures.py): each ends in one line naming the
argument, exit 2 and nothing written, instead of a hang, a traceback, a silent fresh start or a
flag that is silently ignored."""

import pytest
from cliutil import fails as _fails

from attnreuse import cli

PICO = "vit_attnreuse_pico_patch4_32"


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_bench_models_min_time_must_be_finite(capsys, tmp_path, value):
    # NaN passed `min_time_s < 0` and Timer.blocked_autorange(min_run_time=nan) never returned
    out = tmp_path / "m.json"
    _fails(capsys, ["bench", "models", PICO, "--img-size", "32", "--runtimes", "eager", "--min-time", value,
                    "--json", str(out)], "--min-time must be a finite number", value)
    assert not out.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_measure_latency_refuses_a_min_time_it_could_never_reach(value):
    from attnreuse.measure import measure_latency

    with pytest.raises(ValueError, match="finite min_time_s"):
        measure_latency(lambda: None, warmup=0, repeats=1, min_time_s=value)


def test_train_resume_of_a_run_that_does_not_exist_is_refused(capsys, tmp_path):
    # a mistyped --output with --resume trained a new model from scratch and said nothing
    out = tmp_path / "no_such_run"
    _fails(capsys, ["train", "--model", PICO, "--epochs", "1", "--resume", "--output", str(out)],
           f"--resume: output {out} holds no run to continue", "drop --resume")
    assert not out.exists()


@pytest.mark.parametrize("argv, dropped", [
    (["--paper", "--hw", "flat-cloud"], "--hw"),
    (["--paper", "--seq", "512", "--plot", "{tmp}/p.png"], "--plot"),
    (["--paper", "--model", "t5", "--scope", "attention"], "--model, --scope"),
    (["--validate", "--batch", "4", "--buffer-kib", "64"], "--batch, --buffer-kib"),
    (["--validate", "--assume", "fusemax"], "--assume"),
])
def test_dataflow_modes_refuse_flags_they_would_ignore(capsys, tmp_path, argv, dropped):
    # `--paper --hw flat-cloud` printed both platforms anyway and `--paper --plot` drew nothing, exit 0
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    _fails(capsys, ["dataflow", *argv, "--json", str(tmp_path / "d.json")], f"{argv[0]} ", f"drop {dropped}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_dataflow_output_that_is_a_directory_is_named(capsys, tmp_path, flag):
    # --json DIR failed after the sweep with "[Errno 21] Is a directory: '/tmp/.DIR.xxxx.tmp' -> 'DIR'"
    _fails(capsys, ["dataflow", "--seq", "512", flag, str(tmp_path)], f"{flag} {tmp_path} is a directory")
    assert list(tmp_path.iterdir()) == []


def test_bench_study_keeps_an_earlier_study_unless_forced(capsys, monkeypatch, tmp_path):
    # a second `bench study --output DIR` replaced the first one's records, plots and report.md
    out = tmp_path / "study"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "records.json").write_text("[]")
    ran = []
    monkeypatch.setattr("attnreuse.bench.study.run_study", lambda config, progress=None: ran.append(config))
    argv = ["bench", "study", "--model", "whisper-tiny", "--lengths", "16", "--quick", "--output", str(out)]
    _fails(capsys, argv, f"--output {out} already holds a run", "--force")
    assert ran == [] and (out / "records.json").read_text() == "[]"
    assert cli.main([*argv, "--force"]) == 0 and len(ran) == 1


def test_bench_ops_plot_format_is_checked_before_the_sweep(capsys, monkeypatch, tmp_path):
    # `--plot ops.txt` failed in savefig after the whole sweep, with --json already written
    monkeypatch.setattr("attnreuse.bench.ops.run_bench", lambda *a, **k: pytest.fail("the sweep ran"))
    json_out = tmp_path / "ops.json"
    _fails(capsys, ["bench", "ops", "--quick", "--json", str(json_out), "--plot", str(tmp_path / "ops.txt")],
           f"--plot {tmp_path / 'ops.txt'}: matplotlib cannot write .txt files", ".png")
    assert list(tmp_path.iterdir()) == []


def _model_record(**changes):
    """A `bench models` record as the first versions wrote it: no rounds, paired ratios or dtype."""
    rec = {"model": PICO, "runtime": "eager", "img_size": 32, "batch": 1, "family": "attnreuse_vit", "baseline": None,
           "error": None, "latency_ms_median": 1.5, "latency_ms_p90": 1.7, "params": 1_200_000, "macs": 84_000_000}
    rec.update(changes)
    return {k: v for k, v in rec.items() if v is not ...}


def test_bench_report_names_what_a_record_lacks(capsys, tmp_path):
    # a record missing a field the report reads raised a bare KeyError traceback
    import json

    src = tmp_path / "models.json"
    src.write_text(json.dumps([_model_record(), _model_record(runtime="ort", macs=...)]))
    out = tmp_path / "report"
    _fails(capsys, ["bench", "report", str(src), "--output", str(out)],
           str(src), "record 1 looks like a bench models record but lacks macs")
    assert not out.exists()
    src.write_text(json.dumps([{"op": "reuse", "tokens": 64, "batch": 1, "qk_heads": 1, "v_heads": 8, "qk_dim": 32,
                                "v_dim": 32, "note": "", "speedup_vs_sdpa_mha_paired": 1.1}]))
    _fails(capsys, ["bench", "report", str(src), "--output", str(out)], "lacks speedup_vs_sdpa_mha_paired_range")


def test_bench_report_reads_records_from_before_rounds(capsys, tmp_path):
    import json

    src = tmp_path / "old.json"
    src.write_text(json.dumps([_model_record(), _model_record(error="RuntimeError: boom", latency_ms_median=...)]))
    assert cli.main(["bench", "report", str(src), "--output", str(tmp_path / "r")]) == 0
    assert "boom" in (tmp_path / "r" / "report.md").read_text()


def test_bench_models_runs_a_repeated_runtime_or_size_once():
    # `--runtimes eager,eager` timed the model twice and wrote two records for one (model, size, runtime)
    from attnreuse.bench.models import ModelBenchConfig

    config = ModelBenchConfig(models=(PICO,), img_sizes=(32, 64, 32), runtimes=("eager", "ort", "eager"))
    assert config.img_sizes == (32, 64) and config.runtimes == ("eager", "ort")


def test_bench_study_times_a_repeated_length_once():
    # `--lengths 16,16` timed every plan twice at 16 frames: duplicate rows in each table of report.md
    from attnreuse.bench.study import StudyConfig

    assert StudyConfig(model="whisper-tiny", lengths=(32, 16, 32)).lengths == (32, 16)


@pytest.mark.parametrize("argv, needle", [
    (["bench", "ops", "--quick", "--json", "{tmp}/r.csv", "--csv", "{tmp}/r.csv"], "--json and --csv both name"),
    (["bench", "ops", "--quick", "--json", "{tmp}/r.png", "--plot", "{tmp}/./r.png"], "--json and --plot both name"),
    (["bench", "models", PICO, "--img-size", "32", "--json", "{tmp}/r.json", "--csv", "{tmp}/r.json"],
     "--json and --csv both name"),
])
def test_bench_outputs_must_be_different_files(capsys, tmp_path, argv, needle):
    # the output written last silently replaced the other (CSV text in the file asked for as --json)
    _fails(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, needle", [
    (["--model", "uniform_xs"], "--model uniform_xs differs from the model of the checkpoint run"),
    (["--model-kwargs", "depth=4"], "drop --model-kwargs"),
])
def test_convert_refuses_a_model_the_run_directory_overrides(capsys, tmp_path, pico_run, extra, needle):
    # `convert --checkpoint RUN --model uniform_xs` converted the run's pico ViT and exited 0
    out = tmp_path / "out"
    err = _fails(capsys, ["convert", "--checkpoint", str(pico_run), "--plan", "reuse", *extra, "--output", str(out)],
                 needle)
    assert str(pico_run) in err and not out.exists()


def test_export_keeps_an_existing_onnx_unless_forced(capsys, monkeypatch, tmp_path):
    # a second `export --output m.onnx` silently replaced the first model, its int8 copy and its record
    out = tmp_path / "m.onnx"
    out.write_text("keep")
    (tmp_path / "m.export.json").write_text("{}")

    def reached(config):
        raise ValueError("export ran")

    monkeypatch.setattr("attnreuse.export.pipeline.run_export", reached)
    argv = ["export", PICO, "--output", str(out), "--int8"]
    _fails(capsys, argv, f"--output {out}: {out}, {tmp_path / 'm.export.json'} already exist", "--force")
    assert out.read_text() == "keep"
    _fails(capsys, [*argv, "--force"], "export ran")
