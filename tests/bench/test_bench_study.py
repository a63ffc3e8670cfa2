"""`attnreuse bench study` on a tiny random Whisper encoder: plans, bad input, the breakdown's
bookkeeping, the Amdahl prediction and the report. Structure only: timings on a loaded test
machine prove nothing, so no assertion compares speeds."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from attnreuse.bench import study  # noqa: E402
from attnreuse.bench.study_report import check_records  # noqa: E402
from attnreuse.cli import main  # noqa: E402

TINY = dict(d_model=32, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=64, decoder_layers=1,
            decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=24, vocab_size=64,
            pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3)


@pytest.fixture
def tiny_whisper(tmp_path):
    from transformers import WhisperConfig

    path = tmp_path / "whisper-tiny-random.json"
    WhisperConfig(**TINY).to_json_file(str(path))
    return path


def test_plan_names_become_one_kind_per_layer():
    assert study.plan_layers("sdpa", 6, 8) is None
    assert study.plan_layers("share2", 6, 8) == ["mha", "share"] * 3
    assert study.plan_layers("share3", 6, 8) == ["mha", "share", "share"] * 2
    assert study.plan_layers("share3", 4, 8) == ["mha", "share", "share", "mha"]
    assert study.plan_layers("reuse:2", 2, 8) == ["reuse:2", "reuse:2"]
    with pytest.raises(ValueError, match=r"--plans 'flash'.*unknown attention kind 'flash'"):
        study.plan_layers("flash", 4, 8)
    with pytest.raises(ValueError, match="--plans 'share1'"):
        study.plan_layers("share1", 4, 8)
    # share9 in 4 layers ran share4's plan under its own name
    assert study.plan_layers("share4", 4, 8) == ["mha", "share", "share", "share"]
    with pytest.raises(ValueError, match="--plans 'share9': a group of 9 layers in the 4-layer encoder; give G from 2 to 4"):
        study.plan_layers("share9", 4, 8)
    with pytest.raises(ValueError, match="--plans 'skip'"):
        study.plan_layers("skip", 4, 8)  # the first layer has nothing to skip from


def test_sdpa_and_mha_always_run_first():
    assert study.StudyConfig(plans=("share2", "taylor")).plan_names() == ["sdpa", "mha", "share2", "taylor"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lengths=()), "--lengths"), (dict(lengths=(0, 10)), "--lengths"), (dict(plans=()), "--plans"),
    (dict(backend="flash"), "--backend"), (dict(rounds=0), "--rounds"), (dict(positions=-1), "--positions"),
    (dict(dtype="float16"), "--dtype must be one of float32, bfloat16"),
    (dict(backend="native", dtype="bfloat16"), "--backend native runs float32 on the CPU only"),
    (dict(backend="native", device="cuda"), "--backend native runs float32 on the CPU only"),
])  # fmt: skip
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.StudyConfig(**kwargs)


@pytest.mark.parametrize("argv, match", [
    (["--model", "whisper-tiny", "--lengths", "64", "--device", "gpu"], "--device must be cpu, cuda or cuda:N"),
    (["--model", "whisper-tiny", "--lengths", "64", "--plans", "mha,flash"], "--plans 'flash'"),
    (["--model", "whisper-huge", "--lengths", "64"], "--model must be one of whisper-tiny"),
    (["--lengths", "64,x"], None),
])  # fmt: skip
def test_bad_input_is_one_line_and_non_zero(argv, match, tmp_path, capsys):
    if match is None:  # argparse's own error for a malformed list: one line too
        with pytest.raises(SystemExit) as exc:
            main(["bench", "study", *argv, "--output", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.startswith("attnreuse bench study: error: argument --lengths")
        assert len(err.splitlines()) == 1 and err.endswith("(see `attnreuse bench study --help`)")
        return
    assert main(["bench", "study", *argv, "--output", str(tmp_path / "o")]) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert out == ""  # the table's header came before the error line
    assert len(err.splitlines()) == 1 and err.startswith("attnreuse bench study: error:")
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "o").exists()  # validated before anything ran


def test_presets_extend_their_positions_a_config_file_asks(tiny_whisper, tmp_path, capsys):
    """A preset asked for 3000 frames gets Whisper's sinusoids continued to 3000 (the table's first
    1500 rows are unchanged); a config file's table is its own, so it needs --positions."""
    import torch
    from transformers.models.whisper.modeling_whisper import sinusoids

    assert study.whisper_config(study.StudyConfig(model="whisper-tiny", lengths=(250, 3000))).max_source_positions == 3000
    assert study.whisper_config(study.StudyConfig(model="whisper-tiny", lengths=(250, 1500))).max_source_positions == 1500
    assert torch.equal(sinusoids(3000, 384)[:1500], sinusoids(1500, 384))
    argv = ["bench", "study", "--model", str(tiny_whisper), "--lengths", "30", "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--positions 30" in capsys.readouterr().err


def test_cuda_absent_is_a_one_line_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert main(["bench", "study", "--model", "whisper-tiny", "--lengths", "64", "--device", "cuda",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err, err
    assert not (tmp_path / "o").exists()


def test_short_lengths_get_more_forwards():
    config = study.StudyConfig(repeats=6, breakdown_repeats=3)
    assert config.repeats_at(250) == (24, 12) and config.repeats_at(500) == (12, 6)
    assert config.repeats_at(1000) == config.repeats_at(3000) == (6, 3)


def test_removed_parts_predict_from_the_mha_layers():
    layers = [dict(qk_proj=2.0, scores_softmax=3.0, av=1.0, v_proj=1.0, out_proj=1.0, ffn=5.0)] * 4
    assert study.predicted_removed_ms(layers, ["mha"] * 4, 4) == 0.0
    assert study.predicted_removed_ms(layers, ["mha", "share", "mha", "share"], 4) == pytest.approx(2 * 5.0)
    assert study.predicted_removed_ms(layers, ["mha", "share", "share", "mha"], 4) == pytest.approx(2 * 5.0)
    assert study.predicted_removed_ms(layers, ["reuse"] * 4, 4) == pytest.approx(4 * 0.75 * 5.0)
    assert study.predicted_removed_ms(layers, ["reuse:2"] * 4, 4) == pytest.approx(4 * 0.5 * 5.0)
    assert study.predicted_removed_ms(layers, ["taylor"] * 4, 4) == pytest.approx(4 * 4.0)
    assert study.predicted_removed_ms(layers, ["mha", "skip", "mha", "mha"], 4) == pytest.approx(7.0)


def test_parts_from_exclusive_times():
    """The stock attention module's own time is its fused core; in a marked core it is glue (rest);
    norms, a layer's own time (residual adds), the stem and the encoder's own ops are rest pieces."""
    totals = {("attention", 0): 0.006, ("qk_proj", 0): 0.002, ("v_proj", 0): 0.001, ("out_proj", 0): 0.001,
              ("ffn", 0): 0.005, ("norm", 0): 0.001, ("layer", 0): 0.0005,
              ("attention", 1): 0.0005, ("qk_proj", 1): 0.002, ("v_proj", 1): 0.001, ("out_proj", 1): 0.001,
              ("scores_softmax", 1): 0.003, ("av", 1): 0.002, ("stem", None): 0.004, ("norm", None): 0.0002,
              ("rest", None): 0.0003}
    (stock, marked), encoder = study._layer_parts(totals, 2)
    assert stock["core"] == pytest.approx(6.0) and stock["attention_glue"] == 0.0 and stock["scores_softmax"] == 0.0
    assert marked["core"] == 0.0 and marked["attention_glue"] == pytest.approx(0.5)
    assert stock["norms"] == pytest.approx(1.0) and stock["residual"] == pytest.approx(0.5)
    parts = study._summarise([stock, marked], encoder)
    assert sum(parts[p] for p in study.PARTS) == pytest.approx(1e3 * sum(totals.values()))
    assert parts["rest"] == pytest.approx(sum(parts[f"rest_{p}"] for p in study.REST_PARTS))
    assert parts["rest_stem"] == pytest.approx(4.0) and parts["rest_norms"] == pytest.approx(1.2)


def test_tiny_study_records_parts_that_add_up_and_a_report(tiny_whisper, tmp_path):
    out = tmp_path / "study"
    config = study.StudyConfig(model=str(tiny_whisper), lengths=(16, 8), threads=1, rounds=1, repeats=1, warmup=1,
                               breakdown_repeats=1, check_length=16, output=str(out))
    seen = []
    records = study.run_study(config, progress=seen.append)
    plans = ["sdpa", "mha", "share2", "share3", "reuse", "taylor"]
    assert [(r["plan"], r["frames"]) for r in records] == [(p, n) for n in (8, 16) for p in plans]
    assert len(seen) == len(records)
    for r in records:
        parts = [r[f"ms_{p}"] for p in study.PARTS]
        assert sum(parts) == pytest.approx(r["breakdown_total_ms"])  # every part measured, rest included
        assert r["ms_rest"] == pytest.approx(sum(r[f"ms_rest_{p}"] for p in study.REST_PARTS))
        assert all(r[f"ms_{p}"] >= 0 for p in study.PARTS) and r["ms_rest_stem"] > 0 and r["ms_rest_norms"] > 0
        assert r["instrumentation_overhead"] > 0 and r["instrumented_ms"] > 0 and r["instrumented_plain_ms"] > 0
        assert r["device"] == "cpu" and r["positions"] == 24 and not r["positions_extended"]
        assert r["latency_ms_median"] > 0 and r["peak_bytes"] > 0 and r["cpu"] and r["torch"]
        assert r["breakdown_coverage_rounds"] == pytest.approx(r["breakdown_total_ms"] / r["latency_ms_median"])
        assert r["breakdown_coverage"] > 0
        assert len(r["layers"]) == 4
    by = {(r["plan"], r["frames"]): r for r in records}
    assert by[("sdpa", 8)]["ms_core"] > 0 and by[("sdpa", 8)]["ms_scores_softmax"] == 0  # fused: one step
    assert by[("mha", 8)]["ms_scores_softmax"] > 0 and by[("mha", 8)]["ms_av"] > 0 and by[("mha", 8)]["ms_core"] == 0
    assert by[("share2", 16)]["plan_layers"] == ["mha", "share"] * 2
    assert [layer["qk_proj"] > 0 for layer in by[("share2", 16)]["layers"]] == [True, False, True, False]
    assert by[("taylor", 16)]["ms_core"] > 0 and by[("taylor", 16)]["ms_scores_softmax"] == 0
    assert by[("mha", 16)]["predicted_speedup_vs_mha"] == 1.0 and "predicted_speedup_vs_mha" not in by[("sdpa", 16)]
    assert by[("share2", 16)]["predicted_speedup_vs_mha"] > 1.0
    for name in ("records.json", "records.csv", "config.json", "report.md", "breakdown.png", "speedup.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(json.loads((out / "records.json").read_text())) == 12
    saved = json.loads((out / "config.json").read_text())
    assert all(r["config"] == saved for r in json.loads((out / "records.json").read_text()))
    report = (out / "report.md").read_text()
    assert "| share3 |" in report and "Amdahl at 16 frames" in report and r["cpu"] in report


def test_native_backend_study_runs_every_map_layer_natively(tiny_whisper, tmp_path, monkeypatch):
    """--backend native: every attnreuse layer that forms a map runs the native kernel (one step,
    "core"), a share group's writer included."""
    import attnreuse.ops.softmax as softmax_mod

    calls = []
    real = softmax_mod._native_attention
    monkeypatch.setattr(softmax_mod, "_native_attention", lambda *a: calls.append(a[-1]) or real(*a))
    config = study.StudyConfig(model=str(tiny_whisper), lengths=(8,), plans=("share2",), threads=1, rounds=1,
                               repeats=1, warmup=0, breakdown_repeats=1, check_length=8, backend="native",
                               output=str(tmp_path / "study"))
    records = {r["plan"]: r for r in study.run_study(config)}
    assert calls and True in calls and False in calls  # share2's writers return their map; mha's layers do not
    assert records["share2"]["ms_core"] > 0 and records["share2"]["ms_scores_softmax"] == 0


def test_bf16_study_runs_every_plan_in_bf16(tiny_whisper, tmp_path, monkeypatch):
    """--dtype bfloat16: every plan's weights and the mel input are bf16 (the stock sdpa encoder's
    too), the records and the report say so, with whether this CPU has bf16 units."""
    import torch

    from attnreuse.cpu_units import dtype_support

    seen = {}
    real = study._call

    def spy(model, x, backend):
        seen.setdefault(id(model), ({p.dtype for p in model.parameters()}, {v.dtype for v in x.values()}))
        return real(model, x, backend)

    monkeypatch.setattr(study, "_call", spy)
    out = tmp_path / "study"
    config = study.StudyConfig(model=str(tiny_whisper), lengths=(8,), plans=("share2",), threads=1, rounds=1,
                               repeats=1, warmup=1, breakdown_repeats=1, check_length=8, dtype="bfloat16",
                               output=str(out))
    records = study.run_study(config)
    assert [r["plan"] for r in records] == ["sdpa", "mha", "share2"]
    assert len(seen) == 3 and all(v == ({torch.bfloat16}, {torch.bfloat16}) for v in seen.values())
    execution = dtype_support("bfloat16")["execution"]
    assert all(r["dtype"] == "bfloat16" and r["dtype_execution"] == execution for r in records)
    assert all(r["latency_ms_median"] > 0 and r["breakdown_total_ms"] > 0 for r in records)
    assert "batch 1, bfloat16" in (out / "report.md").read_text()


def _rec(plan, n, vs_sdpa, coverage=1.0, of_pred=None):
    r = dict(plan=plan, frames=n, speedup_vs_sdpa=vs_sdpa, breakdown_coverage=coverage, speedup_vs_mha=1.0)
    if of_pred is not None:
        r.update(of_predicted=of_pred, predicted_speedup_vs_mha=1.0)
    return r


def test_checks_pass_and_fail_as_stated():
    good = [_rec("share2", 500, 1.1, of_pred=0.8), _rec("share2", 1500, 1.3, of_pred=0.95),
            _rec("share3", 500, 1.2), _rec("share3", 1500, 1.19, coverage=1.15)]
    result = {what: ok for what, ok, _ in check_records(good, 1500)}
    assert result["share2: speed-up over sdpa grows with N"]
    assert not result["share3: speed-up over sdpa grows with N"]  # ends lower than it starts
    assert not result["the breakdown (sum of the measured parts, rest included) is within 10% of the uninstrumented end-to-end time"]
    assert [ok for what, ok in result.items() if "Amdahl" in what] == [True]  # only the check length counts
