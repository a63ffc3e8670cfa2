"""Every table of numbers in README.md and docs/*.md is rebuilt here from what produced it (the
committed records under docs/measured/, or the analytic model), or is listed below with the reason
it is not. A new table fails `test_every_table_is_accounted_for` until it is given one or the other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MINILM_HEADS = 12  # all-MiniLM-L6-v2's config: num_attention_heads


def _hf(table: str, record: str, *args):
    """A rebuild of an `attnreuse.hf.measured` table (`table`, by name: the module is imported only
    when the test runs) from docs/measured/`record`, with `args` after the records."""
    def rebuild():
        import attnreuse.hf.measured as measured

        return getattr(measured, table)(json.loads((ROOT / "docs/measured" / record).read_text()), *args)

    return rebuild


def _flat_paper():
    from attnreuse.dataflow.report import paper_table

    return paper_table()


def taylor_seed_table(records: dict) -> str:
    """docs/taylor.md's five-seed table, from the committed test top-1 of each training run."""
    import statistics

    lines = ["| sparse branch | seed 0 | 1 | 2 | 3 | 4 | median | furthest from it |", "|---|---|---|---|---|---|---|---|"]
    rows = (("additive", 1, "additive (old default)"), ("residual", 1, "residual (default)\\*"),
            ("residual", 2, "residual (default), 2 threads"))
    for mode, threads, label in rows:
        runs = sorted((r for r in records["runs"] if (r["sparse_mode"], r["threads"]) == (mode, threads)),
                      key=lambda r: r["seed"])
        accs = [r["test_top1"] for r in runs]
        med = statistics.median(accs)
        far = max(runs, key=lambda r: abs(r["test_top1"] - med))
        cells = " | ".join(f"{a:.2f}" for a in accs)
        lines.append(f"| {label} | {cells} | {med:.2f} | {far['test_top1'] - med:+.2f} (seed {far['seed']}) |")
    return "\n".join(lines)


def _taylor_seeds():
    return taylor_seed_table(json.loads((ROOT / "docs/measured/taylor_seeds_2026-11-30.json").read_text()))


def _speech_study(run: str, name: str = "speech_study_2026-12-01.json"):
    def build():
        from attnreuse.bench.study_report import latency_table

        records = json.loads((ROOT / "docs/measured" / name).read_text())
        return "\n".join(latency_table(records["runs"][run]["records"]))

    return build


def _share_growth():
    """docs/map_sharing.md's curves of share2 and share3 over N, one row per Xeon run (rendered
    here from the study's committed records: the report prints each curve in its checks)."""
    runs = json.loads((ROOT / "docs/measured/speech_study_2026-12-02.json").read_text())["runs"]
    lines = ["| run | share2 | share3 |", "|---|---|---|"]
    for name, label in (("xeon_dense", "dense"), ("xeon_dense_repeat", "dense, 5 rounds x 15 (the table)"),
                        ("xeon_auto", "auto, maps in FLAT tiles"),
                        ("xeon_auto_dense_maps", "auto, maps written densely (after the change)"),
                        ("xeon_dense_bf16", "dense, bfloat16 (`--dtype bfloat16`)"),
                        ("xeon_auto_native", "auto, maps of 64 MiB and more by the native writer")):
        def curve(plan, records=runs[name]["records"]):
            return " / ".join(f"{r['speedup_vs_sdpa']:.2f}" for r in sorted(
                (r for r in records if r["plan"] == plan), key=lambda r: r["frames"]))
        lines.append(f"| {label} | {curve('share2')} | {curve('share3')} |")
    return "\n".join(lines)


def _sharing_ops(name: str):
    def build():
        from attnreuse.bench.report import sharing_table

        return "\n".join(sharing_table(bench_records(name, "2026-12-02")))

    return build


def mutation_table(records: dict) -> str:
    """docs/testing.md's table of a mutmut run, from its committed counts (mutmut is not one of
    attnreuse's tools, so its table is rendered here)."""
    lines = ["| file | mutants | killed | survived | no tests | not checked | survived / tested |",
             "|---|---|---|---|---|---|---|"]
    rows = list(records["files"].items())
    total = {k: sum(c[k] for _, c in rows) for k in ("mutants", "killed", "survived", "no_tests")}
    for name, c in [*rows, ("all", total)]:
        tested = c["killed"] + c["survived"]
        rate = f"{c['survived'] / tested:.1%}" if tested else "-"
        unchecked = c["mutants"] - tested - c["no_tests"]
        lines.append(f"| {name} | {c['mutants']} | {c['killed']} | {c['survived']} | {c['no_tests']} | {unchecked} | {rate} |")
    return "\n".join(lines)


def _mutation_run():
    return mutation_table(json.loads((ROOT / "docs/measured/mutmut_2026-11-30.json").read_text()))


def _study(table: str):
    def build():
        from attnreuse.study import report

        data = json.loads((ROOT / "docs/measured/study_digits_2026-11-30.json").read_text())
        return "\n".join(getattr(report, table)(data))

    return build


def mutation_rerun_table(records: dict) -> str:
    """docs/testing.md's table of the second mutmut run: mutmut's verdicts per file, then how the
    mutants it left alive (survived or timed out) were answered by hand."""
    cols = ("mutants", "killed", "timed_out", "survived", "killed_by_new_tests", "equivalent")
    lines = ["| file (second run) | mutants | not checked | killed | timed out | survived "
             "| answered: new test kills it | answered: equivalent | open |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = list(records["files"].items())
    total = {k: sum(c[k] for _, c in rows) for k in cols}
    for name, c in [*rows, ("all", total)]:
        alive = c["survived"] + c["timed_out"]
        unchecked = c["mutants"] - c["killed"] - alive
        still_open = alive - c["killed_by_new_tests"] - c["equivalent"]
        lines.append(f"| {name} | {c['mutants']} | {unchecked} | {c['killed']} | {c['timed_out']} | {c['survived']} "
                     f"| {c['killed_by_new_tests']} | {c['equivalent']} | {still_open} |")
    return "\n".join(lines)


def _mutation_rerun():
    return mutation_rerun_table(json.loads((ROOT / "docs/measured/mutmut_2026-11-30_second.json").read_text()))


def bench_records(name: str, day: str = "2026-11-30") -> list[dict]:
    """A committed bench record file (docs/measured/bench_DAY/NAME.json): the fields every
    record shares are stored once under "shared"."""
    data = json.loads((ROOT / f"docs/measured/bench_{day}/{name}.json").read_text())
    return [{**data["shared"], **r} for r in data["records"]]


def _validation():
    from attnreuse.dataflow.validate import validation_table

    return "\n".join(validation_table(bench_records("validate")))


def _bench_table(table: str, name: str, day: str = "2026-11-30", keep: str | None = None):
    """The report's `table` of a committed bench record file (only records with the field `keep`)."""
    def build():
        from attnreuse.bench import report

        records = [r for r in bench_records(name, day) if keep is None or r.get(keep) is not None]
        return "\n".join(getattr(report, table)(records))

    return build


# (doc, header row) -> how the table is rebuilt
REBUILT = {
    ("docs/benchmarks.md", "| op | batch | N | qk/v heads x dim | median ms | p90 ms | peak MiB | GFLOP/s | "
     "of matmul peak | vs sdpa_mha |"): _bench_table("ops_table", "ops"),
    ("docs/benchmarks.md", "| model | input | exporter |"): _bench_table("export_table", "int8"),
    ("docs/dataflow.md", "| case | N | measured |"): _validation,
    ("docs/benchmarks.md", "| Row | Model | Input (px) |"): _study("rows_table"),
    ("docs/benchmarks.md", "| Plan | Source test (%) |"): _study("retrofits_table"),
    ("docs/testing.md", "| file | mutants |"): _mutation_run,
    ("docs/testing.md", "| file (second run) |"): _mutation_rerun,
    ("docs/taylor.md", "| sparse branch | seed 0 |"): _taylor_seeds,
    ("docs/hf.md", "| plan | maps computed |"): _hf("fidelity_table", "hf_minilm.json", MINILM_HEADS),
    ("docs/hf.md", "| plan | eager ms |"): _hf("speed_table", "hf_minilm.json"),
    ("docs/hf.md", "| model | ORT ms |"): _hf("fused_table", "hf_minilm_fused_stock_2026-12-01.json"),
    ("docs/hf.md", "| model | float32 fidelity | int8 fidelity |"): _hf("int8_table", "hf_minilm_int8_2026-12-01.json"),
    ("docs/hf.md", "| ViT-S plan (random weights) |"): _hf("eval_speed_table", "hf_vit_s_random_2026-12-01.json", "ViT-S plan (random weights)"),
    ("docs/hf.md", "| ModernBERT-base plan (random weights) |"): _hf("eval_speed_table", "hf_modernbert_base_random_2026-12-01.json",
                                                                   "ModernBERT-base plan (random weights)"),
    ("docs/hf.md", "| ModernBERT-base plan, fused |"): _hf("fused_table", "hf_modernbert_base_random_fused_2026-12-01.json",
                                                                 "ModernBERT-base plan, fused"),
    ("docs/hf.md", "| DeBERTa-v3-base plan (random weights) |"): _hf("eval_speed_table", "hf_deberta_v3_base_random_2026-12-02.json",
                                                                    "DeBERTa-v3-base plan (random weights)"),
    ("docs/hf.md", "| BEiT-base plan (random weights) |"): _hf("eval_speed_table", "hf_beit_base_random_2026-12-02.json",
                                                             "BEiT-base plan (random weights)"),
    ("docs/hf.md", "| EuroBERT-210m plan (random weights) |"): _hf("eval_speed_table", "hf_eurobert_210m_random_2026-12-02.json",
                                                                  "EuroBERT-210m plan (random weights)"),
    ("docs/hf.md", "| MPNet-base plan, fused |"): _hf("fused_table", "hf_mpnet_base_random_fused_2026-12-01.json", "MPNet-base plan, fused"),
    ("docs/dataflow.md", "| platform | scope | `fusemax` (default) |"): _flat_paper,
    ("docs/map_sharing.md", "| run | share2 | share3 |"): _share_growth,
}
# (doc, header row) -> why it is not rebuilt here
NOT_REBUILT = {
    **{("README.md", h): "inside the Measured block: tests/demo/test_demo.py::"
       "test_readme_measured_section_is_generated_from_committed_records rebuilds it from docs/measured/demo_records.json"
       for h in ("| model | plan | MACs saved |", "| model | eager ms | vs efficientvit_m1 |", "| plan | px | GMACs |",
                 "| op | N | ms (p90) |", "| stage | status | seconds |")},
    ("docs/benchmarks.md", "| model | baseline | img |"): "several runs under one header (UniForm, ViT-S plans, "
    "on two CPUs): test_bench_baseline_tables_are_rebuilt and test_ordered_bench_tables_are_rebuilt rebuild each",
    ("docs/benchmarks.md", "| op | batch | N | qk/v heads x dim | median ms | p90 ms | peak MiB | GFLOP/s | "
     "of matmul peak | of matmul peak, paired over rounds |"): "three runs under one header (two CPUs, two dtypes): "
    "test_ordered_bench_tables_are_rebuilt rebuilds each",
    ("docs/benchmarks.md", "| model | img | runtime | speed-up over baseline, paired |"): "two runs under one "
    "header (two CPUs): test_ordered_bench_tables_are_rebuilt rebuilds each",
    ("docs/map_sharing.md", "| plan | N=250: ms / vs sdpa / attn % |"): "five runs under one header: "
    "test_speech_study_tables_are_rebuilt rebuilds each from docs/measured/speech_study_2026-12-01.json, "
    "_2026-12-02.json and whisper_base_study_2026-11-30.json",
    ("docs/map_sharing.md", "| N | batch | heads x dim | map writer |"): "three runs under one header (float32, "
    "bfloat16, float32 with the native writer): test_map_sharing_ops_tables_are_rebuilt rebuilds each",
    ("docs/dataflow.md", "| N | BERT | TrXL | T5 | XLM |"): "analytic (`attnreuse dataflow --published`, ~20 s of "
    "searches): tests/dataflow/test_published.py::test_docs_tables_are_rebuilt_from_the_model rebuilds them",
    ("docs/dataflow.md", "| preset | BERT | TrXL | T5 | XLM |"): "analytic, rebuilt with the tables above it",
    ("docs/dataflow.md", "| preset | MACs/cycle |"): "hardware presets and their sources (text, not results)",
    ("docs/dataflow.md", "| name | depth | width |"): "model configurations (text, not results)",
    ("docs/dataflow.md", "| option | `attnreuse` (default on a CPU/GPU) |"): "the assumptions' options (text, not results)",
    ("docs/hf.md", "| kind | keeps |"): "the plan kinds (text, not results)",
    ("docs/reuse_attention.md", "| | scores `QK^T` |"): "cost formulas (text, not results)",
}


def _tables() -> list[tuple[str, str, str]]:
    """(doc, header row, the whole table) of every markdown table."""
    out = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
                j = i
                while j < len(lines) and lines[j].startswith("|"):
                    j += 1
                out.append((path.relative_to(ROOT).as_posix(), line, "\n".join(lines[i:j])))
    return out


def _key(doc: str, header: str, keys) -> tuple[str, str] | None:
    return next((k for k in keys if k[0] == doc and header.startswith(k[1])), None)


def test_every_table_is_accounted_for():
    loose = [(doc, header) for doc, header, _ in _tables()
             if _key(doc, header, REBUILT) is None and _key(doc, header, NOT_REBUILT) is None]
    assert not loose, f"tables neither rebuilt nor listed with a reason in NOT_REBUILT: {loose}"
    listed = {(doc, h) for doc, h, _ in _tables()}
    stale = [k for k in (*REBUILT, *NOT_REBUILT) if not any(d == k[0] and h.startswith(k[1]) for d, h in listed)]
    assert not stale, f"listed tables no longer in the docs: {stale}"


@pytest.mark.parametrize("key", list(REBUILT), ids=lambda k: f"{k[0]}:{k[1]}")
def test_table_equals_its_rebuild(key):
    doc, header = key
    tables = [t for d, h, t in _tables() if d == doc and h.startswith(header)]
    assert len(tables) == 1, f"{doc}: {len(tables)} tables start with {header!r}"
    rebuilt = REBUILT[key]()
    assert tables[0] == rebuilt, f"{doc}: the table under {header!r} differs from its rebuild:\n{rebuilt}"


def test_speech_study_tables_are_rebuilt():
    """docs/map_sharing.md's five bench-study tables (Whisper on the AMD EPYC, dense and auto, on the
    GPU, on the Intel Xeon; wav2vec2 on the EPYC) are the study report's own table of the committed
    records, in that order."""
    doc = (ROOT / "docs/map_sharing.md").read_text()
    tables = [_speech_study("cpu_dense")(), _speech_study("cpu_auto")(),
              _speech_study("gpu_dense", "whisper_base_study_2026-11-30.json")(),
              _speech_study("xeon_dense_repeat", "speech_study_2026-12-02.json")(), _speech_study("wav2vec2_cpu_dense")()]
    at = [doc.find(t) for t in tables]
    assert all(i >= 0 for i in at) and at == sorted(at), "docs/map_sharing.md's study tables differ from their records"


def test_map_sharing_ops_tables_are_rebuilt():
    """docs/map_sharing.md's three `bench ops` sharing tables (whisper widths, float32, bfloat16,
    float32 with the native writer) are the bench report's own sharing table of the committed
    records, in that order."""
    doc = (ROOT / "docs/map_sharing.md").read_text()
    names = ("ops_sharing_whisper", "ops_sharing_whisper_bf16", "ops_sharing_whisper_native")
    at = [doc.find("\n" + _sharing_ops(name)() + "\n") for name in names]
    assert all(i >= 0 for i in at) and at == sorted(at), "docs/map_sharing.md's sharing tables differ from their records"


def test_bench_baseline_tables_are_rebuilt():
    """docs/benchmarks.md's two `bench models` tables (UniForm with its probes, then the ViT-S plans)
    are the report's baseline table of the committed records, in that order."""
    from attnreuse.bench.report import baseline_table

    doc = (ROOT / "docs/benchmarks.md").read_text()
    tables = ["\n".join(baseline_table([r for r in bench_records(name) if r.get("speedup_vs_baseline") is not None]))
              for name in ("uniform", "vit_plans")]
    at = [doc.find(t) for t in tables]
    assert all(i >= 0 for i in at) and at == sorted(at), "docs/benchmarks.md's bench models tables differ from their records"


# docs/benchmarks.md's tables that share a header with another run's, in the order they stand:
# the AMD EPYC's paired operators and UniForm ceilings, then the Intel Xeon with AMX section.
ORDERED_BENCH_TABLES = [
    ("ops_table", "ops_paired", "2026-12-01", None),
    ("ceiling_table", "uniform_probes", "2026-12-01", "share_of_ceiling"),
    ("ops_table", "ops_fp32", "2026-12-02", None),
    ("ops_table", "ops_bf16", "2026-12-02", None),
    ("baseline_table", "vit_plans_bf16", "2026-12-02", "speedup_vs_baseline"),
    ("baseline_table", "vit_plans_fp32", "2026-12-02", "speedup_vs_baseline"),
    ("ceiling_table", "uniform_probes", "2026-12-02", "share_of_ceiling"),
    ("baseline_table", "int8_ort", "2026-12-02", "speedup_vs_baseline"),
]


def test_ordered_bench_tables_are_rebuilt():
    """Each table of ORDERED_BENCH_TABLES is the bench report's own table of its committed records,
    whole (a line of its own), in that order."""
    doc = (ROOT / "docs/benchmarks.md").read_text()
    at = []
    for table, name, day, keep in ORDERED_BENCH_TABLES:
        rebuilt = _bench_table(table, name, day, keep)()
        found = doc.find("\n" + rebuilt + "\n", at[-1] if at else 0)
        assert found >= 0, f"docs/benchmarks.md: no {table} of bench_{day}/{name}.json after the tables before it:\n{rebuilt}"
        at.append(found)
