"""The demo pipeline end to end on a quick configuration: report, caching, config validation."""

import json

import pytest

from attnreuse.demo.config import DemoConfig
from attnreuse.demo.run import run_demo


def test_demo_quick_writes_report_and_reuses_stages(tmp_path):
    cfg = DemoConfig(output=str(tmp_path), quick=True, models=("vit-mha", "vit-reuse"), op_tokens=(64,), progress=False)
    report = run_demo(cfg)
    text = report.read_text()
    for needle in ("vit-mha", "vit-reuse", "| reuse | 64 |", "accuracy_vs_latency.png", "ops_vs_tokens.png"):
        assert needle in text, needle
    for png in ("accuracy_vs_latency.png", "ops_vs_tokens.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    measure = json.loads((tmp_path / "measure" / "vit-reuse.json").read_text())
    assert measure["onnx_max_abs_diff"] <= 1e-4
    assert measure["eager_latency_ms_median"] > 0 and measure["ort_latency_ms_median"] > 0

    # A second run reuses every finished stage: no file is rewritten but the report.
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".md" and p.suffix != ".png"}
    run_demo(cfg)
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t and p.name != "demo_config.json"]
    assert changed == []

    # A different configuration is not served from the cache: the row is trained and measured anew.
    summary = tmp_path / "train" / "vit-mha" / "summary.json"
    before = summary.stat().st_mtime_ns
    run_demo(DemoConfig(output=str(tmp_path), quick=True, seed=1, models=("vit-mha",), op_tokens=(64,), progress=False))
    assert summary.stat().st_mtime_ns != before
    assert json.loads((tmp_path / "train" / "vit-mha" / "config.json").read_text())["seed"] == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [({"models": ("vit-nope",)}, "models"), ({"epochs": 0}, "epochs"), ({"op_tokens": ()}, "op_tokens")],
)
def test_demo_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**kwargs)
