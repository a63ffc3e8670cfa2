"""The model against published FLAT numbers: data files, assumptions, hand-computed cases, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from attnreuse.cli import main
from attnreuse.dataflow import attention_layer, evaluate
from attnreuse.dataflow.assumptions import CHOICES, DEFAULT, SETTINGS, Assumptions, get_setting
from attnreuse.dataflow.cost import _fused
from attnreuse.dataflow.published import (
    QUANTITIES,
    TOLERANCE,
    _rows,
    _spill_from,
    compare_published,
    platform,
    points,
    workload,
)
from test_cost import UNIT  # tests/dataflow is on sys.path (pytest prepends a test file's directory)

COMMIT = "f543beb9f53e"
KEYS = {"preset", "model", "seq_len", "quantity", "assumptions", "predicted", "published", "source"}


def test_every_published_row_names_its_source():
    for name in ("fusemax_platforms.csv", "fusemax_models.csv", "fusemax_attention.csv", "flat_replay.csv"):
        rows = _rows(name)
        assert rows and all(COMMIT in r["source"] and (".csv" in r["source"] or ".py" in r["source"]) for r in rows)
    assert len(_rows("fusemax_attention.csv")) == 2 * 4 * 6  # FLAT and unfused, 4 models, 1K..1M
    assert len(_rows("flat_replay.csv")) == 2 * 4 * 12  # edge and cloud, 4 models, 512..1M
    assert {p.quantity for p in points()} == set(QUANTITIES)


def test_published_platforms_and_models_are_read_from_the_data():
    edge, cloud = platform("edge"), platform("cloud")
    assert (edge.macs_per_cycle, edge.buffer_bytes, edge.offchip_bytes_per_s) == (1024, 512 << 10, 50 * 2**30)
    assert (cloud.pe_rows, cloud.buffer_bytes, cloud.offchip_bytes_per_s) == (256, 32 << 20, 400 * 2**30)
    t5 = workload("T5", 4096)
    assert (t5.batch, t5.v_heads, t5.dk, t5.embed_dim, t5.attention_only) == (64, 8, 64, 512, True)
    with pytest.raises(ValueError, match="unknown published platform 'tpu'"):
        platform("tpu")
    with pytest.raises(ValueError, match="unknown published model 'GPT'"):
        workload("GPT", 512)


def test_assumptions_are_validated_and_change_the_hardware():
    with pytest.raises(ValueError, match="softmax must be one of"):
        Assumptions(softmax="gpu")
    with pytest.raises(ValueError, match="double_buffer must be one of"):
        Assumptions(double_buffer=1)
    with pytest.raises(ValueError, match="unknown assumption setting 'x'"):
        get_setting("x")
    cloud = platform("cloud")
    assert Assumptions(softmax="1d").hardware(cloud).vector_ops_per_cycle == 256
    assert math.isinf(Assumptions(softmax="free").hardware(cloud).vector_ops_per_cycle)
    assert Assumptions(pe_utilisation="full").hardware(cloud).pe_rows == 0
    with pytest.raises(ValueError, match="softmax='1d' needs a PE array shape"):
        Assumptions(softmax="1d").hardware(UNIT)
    assert SETTINGS["attnreuse"] == DEFAULT
    assert set(DEFAULT.differences(SETTINGS["fusemax"])) == {"softmax", "kv_spill"}


def test_fusemax_setting_by_hand_on_the_cloud():
    """BERT, 1K tokens: FLAT is bound by the 1D softmax (4 passes over B*H*N^2 scores on 256 lanes);
    unfused adds each operator's max(memory, compute): Logit and Attend move Q,K (V,O) and the
    scores once at 400 GiB/s, the softmax is compute-bound."""
    a, hw, w = SETTINGS["fusemax"], platform("cloud"), workload("BERT", 1024)
    scores, clock, bw = 64 * 12 * 1024**2, 940e6, 400 * 2**30
    assert evaluate(w, hw, "flat", a).time_s == pytest.approx(4 * scores / 256 / clock)
    operand = 2 * 64 * 1024 * 768 * 2  # two [B, N, H*64] FP16 tensors
    logit = attend = (operand + 2 * scores) / bw
    softmax = max(4 * scores / 256 / clock, 4 * scores / bw)
    assert evaluate(w, hw, "baseline", a).time_s == pytest.approx(logit + softmax + attend, rel=1e-6)


@pytest.mark.parametrize("passes", [2, 4])
def test_a_spilled_tile_moves_its_overflow_passes_times(passes):
    """N=256, one map, dk=dv=8, a 4 KiB buffer, 16 rows, no double-buffering: I/O, K/V and score
    chunks take (16 + 64) * 16 + 16 * 64 = 2304 elements, leaving 1792 of the 4096-element score
    tile: 56.25% spills; K and V are read 256 / 16 times."""
    hw = dataclasses.replace(UNIT, buffer_bytes=4096)
    w = attention_layer(batch=1, heads=1, seq_len=256, dk=8)
    tile = _fused(w, hw, "row", 16, False, io=1, spill=passes)
    assert tile.tile == "row R=16 kv=streamed scores 56.2% spilled" and tile.peak_elems == 4096
    assert tile.offchip_elems == 256 * 16 + 256 * 16 * 16 + passes * 0.5625 * 256 * 256  # Q+O, K+V, scores
    a = Assumptions(kv_spill="spill-scores", spill_passes=passes, double_buffer=False)
    assert evaluate(w, hw, "flat", a).time_s <= evaluate(w, hw, "flat", DEFAULT).time_s  # more choices


def test_keep_if_fits_baseline_moves_operands_only():
    w = attention_layer(batch=2, heads=3, seq_len=16, dk=4)
    res = evaluate(w, UNIT, "baseline", Assumptions(baseline_scores="keep-if-fits"))
    assert res.offchip_bytes == 2 * 3 * 16 * 4 * 4  # Q, K, V in and O out, once


def test_spill_from_is_the_first_length_of_the_spilling_tail():
    assert _spill_from([(512, True), (1024, False), (2048, True), (4096, True)]) == 2048
    assert _spill_from([(512, True), (1024, False)]) == math.inf
    assert _spill_from([(512, True), (1024, True)]) == 512


@pytest.fixture(scope="module")
def records():
    return compare_published()


def test_latencies_are_within_tolerance_under_the_matching_setting(records):
    numeric = [r for r in records if r["quantity"] != "score_spill_from_seq"]
    assert len(numeric) == 3 * 24 + 96
    missed = [(r["preset"], r["model"], r["seq_len"], r["quantity"], r["rel_diff"]) for r in numeric
              if not r["within_tolerance"]]
    assert not missed


def test_records_carry_their_assumptions_and_name_valid_switches(records):
    for r in records:
        assert KEYS <= set(r)
        assert r["assumptions"] == SETTINGS[r["setting"]].to_dict()
        if r["rel_diff"] is not None:
            assert r["within_tolerance"] == (abs(r["rel_diff"]) <= TOLERANCE)
        for switch in r["gap_closed_by"] + r["default_gap_closed_by"]:
            assert switch.split("=")[0] in CHOICES
    # On these PE arrays the default is FuseMax's setting, so FuseMax's own points match it.
    bert = next(r for r in records if (r["preset"], r["model"], r["seq_len"], r["quantity"])
                == ("cloud", "BERT", 1024, "flat_latency_s"))
    assert bert["default_rel_diff"] == bert["rel_diff"] and abs(bert["rel_diff"]) <= TOLERANCE


def test_the_attnreuse_setting_misses_fusemax_and_the_1d_softmax_alone_closes_it():
    records = compare_published(default=SETTINGS["attnreuse"])
    bert = next(r for r in records if (r["preset"], r["model"], r["seq_len"], r["quantity"])
                == ("cloud", "BERT", 1024, "flat_latency_s"))
    assert not abs(bert["default_rel_diff"]) <= TOLERANCE and bert["default_gap_closed_by"] == ["softmax=1d"]


def test_published_cli_writes_json_and_rejects_configuration_flags(tmp_path, capsys):
    out = tmp_path / "pub.json"
    assert main(["dataflow", "--published", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "predicted vs published" in text and "within 25%" in text
    data = json.loads(out.read_text())
    assert data["settings"]["fusemax"]["softmax"] == "1d" and len(data["records"]) == len(points())
    for argv, flags in ((["--hw", "flat-edge"], "--hw"), (["--seq", "512", "--batch", "8"], "--seq, --batch"),
                        (["--assume", "fusemax"], "--assume")):
        assert main(["dataflow", "--published", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"drop {flags}" in err
    with pytest.raises(SystemExit):  # argparse: the modes are mutually exclusive
        main(["dataflow", "--published", "--paper"])


def test_assume_selects_a_setting_in_the_model_table(capsys):
    argv = ["dataflow", "--hw", "flat-cloud", "--scope", "attention", "--seq", "65536", "--batch", "1"]
    assert main([*argv, "--assume", "fusemax"]) == 0
    assert "assumptions fusemax" in capsys.readouterr().out


def test_docs_tables_are_rebuilt_from_the_model(records):
    """docs/dataflow.md's 'Predicted vs published' tables are markdown_tables' output, byte for byte."""
    from pathlib import Path

    from attnreuse.dataflow.published import markdown_tables

    doc = (Path(__file__).resolve().parents[2] / "docs" / "dataflow.md").read_text()
    assert markdown_tables(records) in doc
