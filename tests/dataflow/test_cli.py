"""`attnreuse dataflow`: table, JSON, plot, paper comparison, validation, errors."""

from __future__ import annotations

import json

import pytest

from attnreuse.cli import main
from attnreuse.dataflow import DATAFLOWS, HARDWARE
from attnreuse.dataflow.validate import ValidateConfig, predicted_ratios, validate

FIELDS = {"dataflow", "seq_len", "time_s", "offchip_bytes", "onchip_peak_bytes", "energy_j", "bound", "speedup_vs_baseline"}


def test_table_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    argv = ["dataflow", "--hw", "flat-cloud", "--model", "bert-base", "--seq", "512,4096", "--batch", "2"]
    assert main([*argv, "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "bert-base (model, batch 2) on flat-cloud" in text
    assert all(name in text for name in DATAFLOWS)
    data = json.loads(out.read_text())
    assert data["config"]["seq_lens"] == [512, 4096] and data["hardware"]["name"] == "flat-cloud"
    records = data["records"]
    assert len(records) == 2 * len(DATAFLOWS) and FIELDS <= set(records[0])
    assert {(r["dataflow"], r["seq_len"]) for r in records} == {(d, n) for d in DATAFLOWS for n in (512, 4096)}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_paper_mode_sets_the_paper_beside_the_model(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["dataflow", "--paper", "--seq", "512,1024", "--batch", "2", "--json", str(out)]) == 0
    assert "1.94x" in capsys.readouterr().out
    means = [r for r in json.loads(out.read_text())["records"] if r["model"] == "mean"]
    assert {(r["hardware"], r["scope"]) for r in means} == {
        (h, s) for h in ("flat-edge", "flat-cloud") for s in ("attention", "model")
    }
    assert all(r["speedup_mean"] >= 1 for r in means)


def test_paper_mode_costs_under_the_chosen_assumptions(tmp_path):
    """--assume reaches every cost of --paper (it once printed the same table for every setting);
    with nothing chosen the PE-array presets use FuseMax's setting."""
    speedups = {}
    for assume in ("attnreuse", "fusemax", None):
        out = tmp_path / f"{assume}.json"
        argv = ["dataflow", "--paper", "--seq", "4096", "--json", str(out)] + (["--assume", assume] if assume else [])
        assert main(argv) == 0
        records = json.loads(out.read_text())["records"]
        speedups[assume] = [r["speedup_mean"] for r in records]
        assert all(r["assumptions"]["softmax"] == ("array" if assume == "attnreuse" else "1d") for r in records)
    assert speedups["attnreuse"] != speedups["fusemax"] == speedups[None]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hw", "tpu"], "unknown hardware 'tpu'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--seq", "0,512"], "seq_lens (--seq) must be positive ints"),
        (["--batch", "0"], "batch must be a positive int"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(["dataflow", *argv]) == 2
    assert message in capsys.readouterr().err


def test_validate_sets_measured_beside_predicted():
    cfg = ValidateConfig(seq_lens=(64,), heads=2, head_dim=8, min_time_s=0.001, rounds=1)
    hw = HARDWARE["flat-edge"]  # any machine: validate compares shapes of records here, not numbers
    records = validate(cfg, hw)
    assert [r["case"] for r in records] == list(predicted_ratios(cfg, hw, 64))
    for r in records:
        assert r["measured_ratio"] > 0 and r["predicted_ratio"] > 0
        assert r["rel_diff"] == pytest.approx(r["predicted_ratio"] / r["measured_ratio"] - 1)
    with pytest.raises(ValueError, match="seq_lens must be positive ints"):
        ValidateConfig(seq_lens=(0,))


def test_model_predicts_a_shared_map_is_cheaper_per_head():
    ratios = predicted_ratios(ValidateConfig(), HARDWARE["flat-edge"], 2048)
    assert ratios["per-head/shared (tiled)"] > 1.5 and ratios["dense/tiled (per-head)"] > 1


def test_an_image_model_defaults_to_its_token_count(tmp_path, capsys):
    out = tmp_path / "vit.json"
    assert main(["dataflow", "--model", "vit_tiny_patch16_224", "--batch", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["seq_lens"] == [197] and {r["seq_len"] for r in data["records"]} == {197}
    assert data["workload"]["embed_dim"] == 192
