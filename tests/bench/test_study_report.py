"""The closing note of `attnreuse bench study`: a check that fails is rendered unticked, one that
passes ticked (the checks themselves are tested in test_bench_study)."""

from types import SimpleNamespace

from attnreuse.bench.study import PARTS, REST_PARTS
from attnreuse.bench.study_report import write_report


def _rec(plan, n, ms, vs_sdpa, coverage=1.0, of_pred=None):
    r = dict(plan=plan, frames=n, latency_ms_median=ms, speedup_vs_sdpa=vs_sdpa, speedup_vs_mha=1.0,
             attention_share=0.5, breakdown_coverage=coverage, breakdown_total_ms=ms * coverage,
             breakdown_coverage_rounds=coverage, instrumentation_overhead=1.0, positions=1500,
             peak_bytes=2**20, cpu="Test CPU", logical_cores=2, torch="2.x",
             **{f"ms_{p}": ms * coverage / len(PARTS) for p in PARTS},
             **{f"ms_rest_{p}": 0.0 for p in REST_PARTS})  # fmt: skip
    if of_pred is not None:
        r.update(of_predicted=of_pred, predicted_speedup_vs_mha=1.2, predicted_removed_ms=1.0, speedup_vs_mha=1.2 * of_pred)
    return r


def test_unmet_checks_are_unticked_in_the_report(tmp_path):
    records = [
        _rec("sdpa", 8, 10.0, 1.0), _rec("mha", 8, 12.0, 0.83), _rec("share2", 8, 11.0, 0.9, coverage=1.3, of_pred=0.5),
        _rec("sdpa", 16, 20.0, 1.0), _rec("mha", 16, 24.0, 0.83), _rec("share2", 16, 25.0, 0.8, of_pred=0.95),
    ]  # fmt: skip
    config = SimpleNamespace(model="tiny", threads=1, batch=1, backend="auto", command="attnreuse bench study", check_length=8,
                             device="cpu")
    md = write_report(records, config, tmp_path).read_text()
    checks = md.split("## Checks", 1)[1].split("##", 1)[0]
    assert "- [ ] the breakdown (sum of the measured parts, rest included) is within 10% of the uninstrumented end-to-end time: worst: share2 at 8" in checks
    assert "- [ ] share2: speed-up over sdpa grows with N: 0.90 -> 0.80" in checks
    assert "- [ ] share2 at 8 frames: measured speed-up over mha >= 90% of the Amdahl prediction" in checks
    assert "- [x]" not in checks
    records[2].update(breakdown_coverage=1.0, of_predicted=0.95)
    records[5].update(speedup_vs_sdpa=1.1)
    md = write_report(records, config, tmp_path).read_text()
    checks = md.split("## Checks", 1)[1].split("##", 1)[0]
    assert checks.count("- [x]") == 3 and "- [ ]" not in checks
