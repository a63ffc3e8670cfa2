"""The measured tables of docs/hf.md, rendered from the committed records: 'Measured:
all-MiniLM-L6-v2' from docs/measured/hf_minilm.json (the `hf convert`/`hf distill` summaries under
"fidelity", the `hf eval --json` records under "speed"), and the fused-export comparison from an
`hf eval --runtimes ort,ort-fused --json` file (`fused_table`), and the int8 comparison from an
`hf eval --runtimes ort,ort-int8 --json` file (`int8_table`), and any `hf eval --json` file's
speed rows (`eval_speed_table`). A docs test checks the page's tables
equal these."""

from __future__ import annotations

__all__ = ["eval_speed_table", "fidelity_table", "fused_table", "int8_table", "plan_label", "speed_table"]

# Softmax maps one layer of a plan computes, per kind (the others apply an earlier one, or none).
_MAPS_PER_LAYER = {"mha": "heads", "reuse": 1}


def plan_label(plan: list[str]) -> str:
    """'reuse (every layer)' for a uniform plan, else the plan's comma-joined kinds."""
    return f"{plan[0]} (every layer)" if len(set(plan)) == 1 and len(plan) > 1 else ",".join(plan)


def _maps(plan: list[str], heads: int) -> str:
    if all(kind == "taylor" for kind in plan):
        return "0 (linear)"
    per = [_MAPS_PER_LAYER.get(kind, 0) for kind in plan]
    return f"{sum(heads if p == 'heads' else p for p in per)} of {heads * len(plan)}"


def _pair(score: dict) -> str:
    return f"{score['cosine']:.3f} / {score['topk_overlap']:.3f}"


def fidelity_table(records: dict, heads: int) -> str:
    """Cosine / top-k overlap of each plan retrofit, fitted and distilled; the best distilled in bold."""
    rows = records["fidelity"]
    best = max(r["distilled"]["cosine"] for r in rows)
    lines = ["| plan | maps computed | retrofit | + 100 fit steps | distilled (steps, training time) | distilled |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        distilled = _pair(r["distilled"])
        if r["distilled"]["cosine"] == best:
            distilled = f"**{distilled}**"
        lines.append(f"| {plan_label(r['plan'])} | {_maps(r['plan'], heads)} | {_pair(r['retrofit'])} | "
                     f"{_pair(r['fitted'])} | {r['distill_steps']} steps, {r['distill_train_s']:.0f} s | {distilled} |")  # fmt: skip
    return "\n".join(lines)


def _speedup(r: dict) -> str:
    if r["model"] == r["baseline"]:
        return "1.00x"
    return f"{r['speedup']:.2f}x [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}]"


def speed_table(records: dict) -> str:
    """Eager and ONNX Runtime latency of each model against the original, with its MAC ideal. A row
    is labelled by the plan of the distilled run it measured (`mha`: the converted, undistilled
    attnreuse kernel)."""
    plans = {r["run"]: r["plan"] for r in records["fidelity"]}
    by = {(r["model"], r["runtime"]): r for r in records["speed"]}
    lines = ["| plan | eager ms | eager speed-up | MAC ideal | of ideal | ONNX Runtime ms | ORT speed-up vs the original's export |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in records["speed"]):
        eager, ort = by[(model, "eager")], by[(model, "ort")]
        run = model.rstrip("/").rsplit("/", 1)[-1]
        label = model if model == eager["baseline"] else (plan_label(plans[run]) if run in plans else f"{run} (attnreuse kernel)")
        of_ideal = "-" if model == eager["baseline"] else f"{eager['of_ideal']:.0%}"
        lines.append(f"| {label} | {eager['latency_ms_median']:.1f} | {_speedup(eager)} | {eager['mac_ideal']:.2f}x | "
                     f"{of_ideal} | {ort['latency_ms_median']:.1f} | {_speedup(ort)} |")  # fmt: skip
    return "\n".join(lines)


def fused_table(records: dict, title: str = "model") -> str:
    """Each model's ONNX Runtime latency, decomposed (`ort`) and fused (`ort-fused`), each speed-up
    against the original's export in the same runtime, and the fused graph's attention subgraphs
    (records: `hf eval --runtimes ort,ort-fused --json`; rows labelled by the candidate's plan, under
    the header `title`)."""
    plans = {model: c["plan"] for model, c in records["candidates"].items()}
    by = {(r["model"], r["runtime"]): r for r in records["speed"]}
    lines = [f"| {title} | ORT ms | vs the original's export | ORT fused ms | attention subgraphs fused | "
             "vs the original's fused export |", "|---|---|---|---|---|---|"]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in records["speed"]):
        plain, fused = by[(model, "ort")], by[(model, "ort-fused")]
        label = model if model == plain["baseline"] else plan_label(plans[model])
        lines.append(f"| {label} | {plain['latency_ms_median']:.1f} | {_speedup(plain)} | "
                     f"{fused['latency_ms_median']:.1f} | {fused['fused_attention_nodes']} | {_speedup(fused)} |")  # fmt: skip
    return "\n".join(lines)


def _paired(x: float, low: float, high: float) -> str:
    return f"{x:.2f}x [{low:.2f}-{high:.2f}]"


def int8_table(records: dict) -> str:
    """Each model in float32 and in ONNX Runtime's dynamic int8 (records: `hf eval --runtimes
    ort,ort-int8 --json`): fidelity to the original on held-out text (cosine / top-k overlap; eager
    float32, and the int8 graph), ONNX Runtime latency, and the int8 graph's speed-ups over the
    original's int8 and float32 exports, each paired within the int8 rounds."""
    label = {model: plan_label(c["plan"]) for model, c in records["candidates"].items()}
    fid = {model: _pair(c["fidelity"]) for model, c in records["candidates"].items()}
    by = {(r["model"], r["runtime"]): r for r in records["speed"]}
    lines = ["| model | float32 fidelity | int8 fidelity | ORT float32 ms | ORT int8 ms | int8 vs the original's int8 | "
             "int8 vs the original's float32 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in records["speed"]):
        plain, q = by[(model, "ort")], by[(model, "ort-int8")]
        original = model == plain["baseline"]
        vs_int8 = "1.00x" if original else _paired(q["speedup"], q["speedup_min"], q["speedup_max"])
        vs_fp32 = _paired(q["speedup_vs_baseline_fp32"], q["speedup_vs_baseline_fp32_min"], q["speedup_vs_baseline_fp32_max"])
        lines.append(f"| {model if original else label[model]} | {'(the reference)' if original else fid[model]} | "
                     f"{_pair(records['int8_fidelity'][model])} | {plain['latency_ms_median']:.1f} | "
                     f"{q['latency_ms_median']:.1f} | {vs_int8} | {vs_fp32} |")  # fmt: skip
    return "\n".join(lines)


def eval_speed_table(records: dict, first: str = "plan") -> str:
    """Per model of an `hf eval --json` file (rows labelled by plan, `first` heading the column):
    its MAC ideal, then per runtime the median latency, the paired speed-up over the original
    [range over rounds] and its share of the MAC ideal."""
    plans = {model: c["plan"] for model, c in records["candidates"].items()}
    runtimes = list(dict.fromkeys(r["runtime"] for r in records["speed"]))
    by = {(r["model"], r["runtime"]): r for r in records["speed"]}
    head = "".join(f" {rt} ms | {rt} speed-up | of ideal |" for rt in runtimes)
    lines = [f"| {first} | MAC ideal |{head}", "|---|---|" + "---|---|---|" * len(runtimes)]
    for model in dict.fromkeys(r["model"] for r in records["speed"]):
        rows = [by[(model, rt)] for rt in runtimes]
        original = model == rows[0]["baseline"]
        cells = "".join(f" {r['latency_ms_median']:.1f} | {_speedup(r)} | {'-' if original else format(r['of_ideal'], '.0%')} |"
                        for r in rows)
        lines.append(f"| {model if original else plan_label(plans[model])} | {rows[0]['mac_ideal']:.2f}x |{cells}")
    return "\n".join(lines)
