"""`attnreuse bench report`: JSON results of `bench models`, `bench ops` and `export` -> one
markdown report with PNG plots (matplotlib, imported only here).

Plots: latency vs parameters and vs MACs per runtime; operator latency and peak memory vs N;
measured speed-up over each family baseline beside the ideal one from MAC counts. The report
states the machine, torch/onnxruntime versions, threads, the commands that produced the inputs
(as recorded in them) and the command that rebuilds the report; and checks the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections import defaultdict
from pathlib import Path

__all__ = ["TARGETS", "build_report", "load_records", "register"]

# (what, threshold) of the deployment targets (issue 4) and the ViT-plan target (issue 3).
TARGETS = {
    "ort_vs_eager_max": 0.8,  # uniform_* ORT latency / eager latency
    "uniform_vs_efficientvit_min": 1.25,  # efficientvit_m* / uniform_* latency, same runtime
    "int8_speedup_min": 1.5,  # uniform_s ORT fp32 / ORT int8 latency
    "int8_size_ratio_max": 0.35,
    "int8_agreement_min": 0.99,
    "onnx_max_abs_diff": 1e-4,
    "fraction_of_ideal_min": 0.9,  # ViT plans: measured / ideal speed-up over the mha plan
    "ceiling_share_min": 0.9,  # uniform_*: T of MODEL:mixer=pointwise / T of MODEL (the no-attention ceiling)
}
_MACHINE_KEYS = ("cpu", "logical_cores", "platform", "python", "torch", "onnxruntime")


def _kind(rec: dict) -> str | None:
    if "runtime" in rec and "model" in rec:
        return "models"
    if "op" in rec and "tokens" in rec:
        return "ops"
    if "onnx" in rec and "config" in rec:
        return "export"
    return None


# What the report reads of each kind of record: (from every record, from every record measured without
# an error, from every one with a speed-up over its baseline); "a.b" is b inside a's dict. A paired ratio
# (`*_paired`) needs its `*_paired_range`. Fields added later (rounds, paired ratios, share_of_ceiling,
# dtype) are read where present, so older records load.
_NEEDS = {
    "models": (("model", "runtime", "img_size", "batch", "family"),
               ("latency_ms_median", "latency_ms_p90", "params", "macs"),
               ("baseline", "ideal_speedup_vs_baseline", "fraction_of_ideal")),
    "ops": (("op", "batch", "tokens", "qk_heads", "v_heads", "qk_dim", "v_dim"), (), ()),
    "export": (("config.model", "onnx.size_bytes", "onnx.max_abs_diff"), (), ()),
}  # fmt: skip


def _missing(rec: dict, kind: str) -> list[str]:
    """The fields of `_NEEDS[kind]` that `rec` lacks."""
    always, measured, speedup = _NEEDS[kind]
    wanted = list(always)
    if kind == "models" and rec.get("error") is None:
        wanted += measured
        if rec.get("speedup_vs_baseline") is not None:
            wanted += speedup
    wanted += [f"{key}_range" for key, value in rec.items() if key.endswith("_paired") and value is not None]

    def has(field: str) -> bool:
        outer, _, inner = field.partition(".")
        return outer in rec and (not inner or (isinstance(rec[outer], dict) and inner in rec[outer]))

    return [field for field in wanted if not has(field)]


def _json_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.rglob("*.json"))
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such results file or directory: {str(path)!r}")


def load_records(paths: list[str | Path]) -> dict[str, list[dict]]:
    """Records by kind ("models", "ops", "export") from JSON files and directories (searched
    recursively). A file given by name must hold results; unrelated JSON in a directory is skipped."""
    out: dict[str, list[dict]] = {"models": [], "ops": [], "export": []}
    for given in paths:
        for path in _json_files(Path(given)):
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                if path == Path(given):
                    raise ValueError(f"{str(path)!r} is not JSON: {err}") from err
                continue
            rows = data if isinstance(data, list) else [data]
            kinds = [(_kind(r) if isinstance(r, dict) else None) for r in rows]
            if path == Path(given) and (not rows or None in kinds):
                raise ValueError(
                    f"{str(path)!r} holds no bench models/bench ops/export records "
                    "(a JSON list of records, or one export record)"
                )
            for i, (row, kind) in enumerate(zip(rows, kinds)):
                if kind is None:
                    continue
                missing = _missing(row, kind)
                if missing:
                    label = "an export" if kind == "export" else f"a bench {kind}"
                    raise ValueError(f"{str(path)!r}: record {i} looks like {label} record but lacks "
                                     f"{', '.join(missing)}, which the report needs")
                out[kind].append({**row, "_source": str(path)})
    if not any(out.values()):
        raise ValueError(f"no bench models/bench ops/export records found in {[str(p) for p in paths]}")
    return out


def _machine(rec: dict) -> dict:
    """The machine and software a record was measured with (nested `machine` or flat keys)."""
    inner = rec.get("machine") if isinstance(rec.get("machine"), dict) else rec
    return {k: inner.get(k) for k in (*_MACHINE_KEYS, "date_utc")}


def _save(fig, path: Path) -> None:
    from attnreuse._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _plot_latency(models: list[dict], x_key: str, x_label: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = [r for r in models if r.get("error") is None and r.get("latency_ms_median")]
    fig, ax = plt.subplots(figsize=(7, 5))
    for runtime in sorted({r["runtime"] for r in ok}):
        for img in sorted({r["img_size"] for r in ok}):
            pts = [r for r in ok if r["runtime"] == runtime and r["img_size"] == img]
            ax.scatter([r[x_key] for r in pts], [r["latency_ms_median"] for r in pts], label=f"{runtime} @{img}", s=18)
            for r in pts:
                ax.annotate(r["model"], (r[x_key], r["latency_ms_median"]), fontsize=5, alpha=0.7)
    ax.set(xscale="log", yscale="log", xlabel=x_label, ylabel="median latency (ms)",
           title=f"latency vs {x_label.split(' (')[0]}")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def _plot_ops(ops: list[dict], key: str, label: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = [r for r in ops if r.get(key) is not None]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    groups = defaultdict(list)
    for r in ok:
        groups[(r["op"], r["batch"], r["qk_heads"], r["v_heads"], r["qk_dim"], r["v_dim"])].append(r)
    for (op, batch, hq, hv, dk, dv), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r["tokens"])
        scale = 2**-20 if key == "peak_bytes" else 1.0
        ax.plot([r["tokens"] for r in rows], [r[key] * scale for r in rows], marker="o", ms=3,
                label=f"{op} B={batch} {hq}x{dk}/{hv}x{dv}")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="tokens N", ylabel=label, title=f"operators: {label} vs N")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=5, ncol=2)
    _save(fig, path)
    plt.close(fig)


def _plot_speedups(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) + 2), 4.5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["speedup_vs_baseline"] for r in rows], width=0.4, label="measured")
    ax.bar([x + 0.2 for x in xs], [r["ideal_speedup_vs_baseline"] for r in rows], width=0.4, label="ideal (MACs)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(list(xs), [f"{r['model']}\n{r['runtime']} @{r['img_size']}" for r in rows], rotation=70, fontsize=6)
    ax.set(ylabel="speed-up over family baseline", title="speed-up over each family's baseline")
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _f(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _models_section(models: list[dict]) -> list[str]:
    lines = ["## Models", ""]
    runtimes = [rt for rt in ("eager", "compile", "ort", "ort-int8") if any(r["runtime"] == rt for r in models)]
    for img in sorted({r["img_size"] for r in models}):
        by_model: dict[str, dict] = defaultdict(dict)
        for r in models:
            if r["img_size"] == img:
                by_model[r["model"]][r["runtime"]] = r
        rows = []
        for name, per in by_model.items():
            first = next((r for r in per.values() if r.get("params")), {})
            cells = [name, _f(first.get("params") and first["params"] / 1e6), _f(first.get("macs") and first["macs"] / 1e9, ".3f")]
            for rt in runtimes:
                r = per.get(rt)
                cells.append("-" if r is None else ("error" if r.get("error") else f"{r['latency_ms_median']:.2f} / {r['latency_ms_p90']:.2f}"))
            eager = per.get("eager")
            cells.append(_f(eager.get("peak_bytes") and eager["peak_bytes"] / 2**20, ".1f") if eager else "-")
            rows.append(cells)
        batch = sorted({r["batch"] for r in models if r["img_size"] == img})
        lines += [f"### {img}x{img}, batch {', '.join(map(str, batch))}: median / p90 latency (ms)", ""]
        lines += _table(["model", "params (M)", "GMACs", *runtimes, "eager peak MiB"], rows) + [""]
    errors = [r for r in models if r.get("error")]
    if errors:
        lines += ["### Errors", ""] + [f"- `{r['model']}` @{r['img_size']} {r['runtime']}: {r['error']}" for r in errors] + [""]
    return lines


def _baseline_rows(models: list[dict]) -> list[dict]:
    return [r for r in models if r.get("speedup_vs_baseline") is not None]


def baseline_table(rows: list[dict]) -> list[str]:
    """Speed-up over each model's baseline (records of `bench models` with a baseline), as markdown lines."""
    table = [
        [r["model"], r["baseline"], str(r["img_size"]), r["runtime"], _f(r["params"] / 1e6), _f(r["macs"] / 1e9, ".3f"),
         _f(r["speedup_vs_baseline"]), _paired(r), _f(r["ideal_speedup_vs_baseline"]), _f(r["fraction_of_ideal"])]
        for r in rows
    ]  # fmt: skip
    return _table(["model", "baseline", "img", "runtime", "params (M)", "GMACs", "measured", "paired over rounds", "ideal",
                   "measured/ideal"], table)


def _baseline_section(rows: list[dict]) -> list[str]:
    probes = any(str(r.get("family")).endswith("_probe") for r in rows)
    return ["## Speed-up over each family's baseline", "",
            "Each model against the baseline its family names (`attnreuse.models.peers`): `uniform_*` against "
            "timm's `efficientvit_m*` of the same widths; attnreuse ViT plans against the `mha` plan of the same "
            "model (`vit_attnreuse_*`). Ideal = baseline MACs / model MACs."
            + (" `MODEL:mixer=pointwise` / `:mixer=none` are mixer probes (`attnreuse.models.probes`), not models:"
               " every mixer cut to its two 1x1 convs / removed, the ceiling a faster token mixer could reach."
               if probes else ""), "",
            *baseline_table(rows),
            "", "![speed-ups](speedup_vs_baseline.png)", ""]  # fmt: skip


def ceiling_table(rows: list[dict]) -> list[str]:
    """Each model timed beside its no-attention probe (`share_of_ceiling`, `bench models`), as
    markdown lines."""
    table = [
        [r["model"], str(r["img_size"]), r["runtime"], _f(r.get("speedup_vs_baseline_paired")),
         _f(r["share_of_ceiling"]), _paired(r, "share_of_ceiling_paired")]
        for r in rows
    ]  # fmt: skip
    return _table(["model", "img", "runtime", "speed-up over baseline, paired", "share of the ceiling",
                   "share of the ceiling, paired over rounds"], table)


def _ceiling_section(rows: list[dict]) -> list[str]:
    return ["## Share of the no-attention ceiling", "",
            "Each model timed beside its `MODEL:mixer=pointwise` probe (every mixer cut to its two 1x1 convs): "
            "T_probe / T_model, which is the model's speed-up over its baseline divided by the probe's (the "
            "baseline cancels). 1.0 would mean attention costs nothing beyond the projections.", "",
            *ceiling_table(rows), ""]  # fmt: skip


def ops_table(ops: list[dict]) -> list[str]:
    """`bench ops` records as a markdown table (one row per op, batch and N), as lines. The paired
    columns appear when some record has them (records from before `bench ops` timed in rounds do
    not)."""
    paired = any(r.get("speedup_vs_sdpa_mha_paired") is not None for r in ops)
    rows = []
    for r in sorted(ops, key=lambda r: (r["op"], r["batch"], r["tokens"])):
        peak = [_f(r.get("fraction_of_matmul_peak"), ".3f")] + ([_paired(r, "fraction_of_matmul_peak_paired")] if paired else [])
        vs = [_f(r.get("speedup_vs_sdpa_mha"))] + ([_paired(r, "speedup_vs_sdpa_mha_paired")] if paired else [])
        rows.append([r["op"], str(r["batch"]), str(r["tokens"]), f"{r['qk_heads']}x{r['qk_dim']}/{r['v_heads']}x{r['v_dim']}",
                     _f(r.get("latency_ms_median"), ".3f"), _f(r.get("latency_ms_p90"), ".3f"),
                     _f(r.get("peak_bytes") and r["peak_bytes"] / 2**20, ".2f"), _f(r.get("gflops_per_s"), ".1f"),
                     *peak, *vs, r.get("note") or ""])  # fmt: skip
    header = ["op", "batch", "N", "qk/v heads x dim", "median ms", "p90 ms", "peak MiB", "GFLOP/s", "of matmul peak"]
    header += ["of matmul peak, paired over rounds"] if paired else []
    header += ["vs sdpa_mha"] + (["vs sdpa_mha, paired over rounds"] if paired else [])
    return _table([*header, "note"], rows)


def sharing_table(ops: list[dict]) -> list[str]:
    """Map sharing, one layer at a time (`bench.ops.sharing_rows` of `bench ops` records with
    sdpa_mha, apply_mha and a map writer), as markdown lines; no lines when none were timed."""
    from attnreuse.bench.ops import sharing_rows

    rows = sharing_rows(ops)
    if not rows:
        return []
    groups = [k for k in rows[0] if k.startswith("group_")]
    header = ["N", "batch", "heads x dim", "map writer", "writer vs sdpa_mha", "apply_mha vs sdpa_mha",
              *(f"group of {k.removeprefix('group_')} vs sdpa_mha" for k in groups)]
    return _table(header, [[str(r["tokens"]), str(r["batch"]), r["widths"], r["writer"], _f(r["writer_vs_sdpa"]),
                            _f(r["apply_vs_sdpa"]), *(f"{r[k]:.2f}x" for k in groups)]
                           for r in sorted(rows, key=lambda r: (r["batch"], r["tokens"], r["widths"], r["writer"]))])


def _ops_section(ops: list[dict]) -> list[str]:
    sharing = sharing_table(ops)
    if sharing:
        sharing = ["Map sharing, one layer at a time: a group's first layer writes the map, the others apply it "
                   "(paired over rounds; attention alone, projections and FFN not included).", "", *sharing, ""]
    return ["## Operators", "", "![op latency](ops_latency_vs_tokens.png) ![op memory](ops_memory_vs_tokens.png)", "",
            *ops_table(ops), "", *sharing]


def export_table(exports: list[dict]) -> list[str]:
    """`attnreuse export` records (fp32 and int8 ONNX) as a markdown table, as lines."""
    rows = []
    for e in exports:
        c, o, q = e["config"], e["onnx"], e.get("int8") or {}
        rows.append([
            c["model"], "x".join(map(str, e.get("input_shape", []))), c.get("exporter", "-"), str(c.get("opset", "-")),
            _f(o["size_bytes"] / 2**20), f"{o['max_abs_diff']:.2g}", _f(e.get("max_abs_logit"), ".3g"), q.get("mode", "-"),
            _f(q.get("int8_size_bytes") and q["int8_size_bytes"] / 2**20), _f(q.get("size_ratio")),
            _f(q.get("fp32_latency_ms_median")), _f(q.get("int8_latency_ms_median")), _f(q.get("speedup")),
            _paired(q, "speedup_paired"),
            _f(q.get("top1_agreement") and 100 * q["top1_agreement"], ".1f"),
        ])  # fmt: skip
    return _table(["model", "input", "exporter", "opset", "fp32 MiB", "max abs diff", "max abs logit", "int8", "int8 MiB",
                   "size ratio", "fp32 ms", "int8 ms", "int8 speed-up", "paired over rounds", "top-1 agreement %"], rows)  # fmt: skip


def _export_section(exports: list[dict]) -> list[str]:
    return ["## ONNX export and int8", "", *export_table(exports), ""]


def _target_lines(models: list[dict], exports: list[dict]) -> list[str]:
    from attnreuse.measure import paired_ratio

    t = TARGETS
    ok = {(r["model"], r["img_size"], r["runtime"]): r for r in models if r.get("error") is None and r.get("latency_ms_median")}
    checks = []

    def check(what: str, value: float | None, passed: bool | None, paired: str = "-") -> None:
        verdict = "not measured" if value is None else ("met" if passed else "NOT met")
        checks.append([what, "-" if value is None else f"{value:.3g}", verdict, paired])

    for (name, img, rt), r in sorted(ok.items()):
        if rt == "ort" and r.get("onnx_max_abs_diff") is not None and r["family"] in ("uniform", "attnreuse_vit"):
            scale = r.get("onnx_max_abs_logit")  # a diff means little on near-zero logits (random weights)
            check(f"{name} @{img} ONNX max abs diff <= {t['onnx_max_abs_diff']:g}"
                  + ("" if scale is None else f" (largest |logit| {scale:.2g})"), r["onnx_max_abs_diff"],
                  r["onnx_max_abs_diff"] <= t["onnx_max_abs_diff"])  # fmt: skip
        if r["family"] == "uniform" and rt == "ort" and r.get("latency_vs_eager") is not None:
            check(f"{name} @{img} ORT / eager <= {t['ort_vs_eager_max']}", r["latency_vs_eager"],
                  r["latency_vs_eager"] <= t["ort_vs_eager_max"])  # fmt: skip
        if r["family"] == "uniform" and rt in ("eager", "ort") and r.get("speedup_vs_baseline") is not None:
            check(f"{name} vs {r['baseline']} @{img} {rt} >= {t['uniform_vs_efficientvit_min']}x",
                  r["speedup_vs_baseline"], r["speedup_vs_baseline"] >= t["uniform_vs_efficientvit_min"], _paired(r))  # fmt: skip
        if r["family"] == "uniform" and rt in ("eager", "ort") and r.get("share_of_ceiling") is not None:
            check(f"{name} @{img} {rt} share of the no-attention ceiling >= {t['ceiling_share_min']}",
                  r["share_of_ceiling"], r["share_of_ceiling"] >= t["ceiling_share_min"],
                  _paired(r, "share_of_ceiling_paired"))  # fmt: skip
        if r["family"] == "attnreuse_vit" and rt in ("eager", "ort") and r.get("fraction_of_ideal") is not None:
            check(f"{name} @{img} {rt} measured/ideal >= {t['fraction_of_ideal_min']}", r["fraction_of_ideal"],
                  r["fraction_of_ideal"] >= t["fraction_of_ideal_min"], _paired(r, per=r["ideal_speedup_vs_baseline"]))  # fmt: skip
        if name == "uniform_s" and rt == "ort-int8" and (name, img, "ort") in ok:
            fp32 = ok[(name, img, "ort")]
            speed = fp32["latency_ms_median"] / r["latency_ms_median"]
            paired = "-"
            if len(fp32.get("latency_ms_round_medians") or []) == len(r.get("latency_ms_round_medians") or []) > 0:
                paired = _fmt_paired(*paired_ratio(fp32["latency_ms_round_medians"], r["latency_ms_round_medians"]))
            check(f"uniform_s @{img} int8 speed-up over ORT fp32 >= {t['int8_speedup_min']}x", speed,
                  speed >= t["int8_speedup_min"], paired)  # fmt: skip
    for e in exports:
        q = e.get("int8")
        if e["config"]["model"] == "uniform_s" and q:
            what = f"uniform_s {'x'.join(map(str, e.get('input_shape', [])))} {q['mode']} int8"
            check(f"{what} file <= {t['int8_size_ratio_max']}x fp32", q["size_ratio"], q["size_ratio"] <= t["int8_size_ratio_max"])
            check(f"{what} top-1 agreement >= {t['int8_agreement_min']:.0%} ({q['images']} images)",
                  q["top1_agreement"], q["top1_agreement"] >= t["int8_agreement_min"])  # fmt: skip
            check(f"{what} speed-up (export) >= {t['int8_speedup_min']}x", q["speedup"], q["speedup"] >= t["int8_speedup_min"],
                  _paired(q, "speedup_paired"))
    if not checks:
        return []
    return ["## Targets", "",
            "value: from the medians of all rounds pooled; paired: the median (min-max) over rounds of the same "
            "quantity from the two blocks timed side by side in each round.", "",
            *_table(["target", "value", "verdict", "paired over rounds"], checks), ""]  # fmt: skip


def _duplicate_lines(models: list[dict]) -> list[str]:
    """A warning listing every (model, size, batch, runtime) measured in more than one input: the
    model tables and the targets keep one record per key, the one from the file read last."""
    sources: dict[tuple, list[str]] = defaultdict(list)
    for r in models:
        sources[(r["model"], r["img_size"], r["batch"], r["runtime"])].append(r["_source"])
    dups = {key: srcs for key, srcs in sources.items() if len(srcs) > 1}
    if not dups:
        return []
    return ["## Measured more than once", "",
            "These were measured in more than one input. The model tables and the targets keep the last one "
            "listed; the speed-up table shows every record.", "",
            *(f"- `{m}` @{img} batch {b} {rt}: " + ", ".join(f"`{s}`" for s in srcs)
              for (m, img, b, rt), srcs in sorted(dups.items())), ""]  # fmt: skip


def _paired(r: dict, key: str = "speedup_vs_baseline_paired", *, per: float = 1.0) -> str:
    """The record's round-paired speed-up `key` (with `key`_range beside it) divided by `per`, as
    `median (min-max)`, or "-" (records from before pairing)."""
    if r.get(key) is None:
        return "-"
    return _fmt_paired(r[key], *r[f"{key}_range"], per=per)


def _fmt_paired(ratio: float, low: float, high: float, *, per: float = 1.0) -> str:
    return f"{ratio / per:.3g} ({low / per:.3g}-{high / per:.3g})"


def build_report(paths: list[str | Path], output: str | Path, *, command: str | None = None) -> Path:
    """Write `output`/report.md and its PNG plots from the results in `paths`; returns report.md."""
    import matplotlib

    matplotlib.use("Agg")
    from attnreuse._io import atomic_write_text

    recs = load_records(paths)
    models, ops, exports = recs["models"], recs["ops"], recs["export"]
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output must be a directory, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    everything = models + ops + [{**e, **e.get("machine", {})} for e in exports]
    dates: dict[tuple, list[str]] = defaultdict(list)
    for r in everything:
        m = _machine(r)
        dates[tuple(m[k] for k in _MACHINE_KEYS)].append(m["date_utc"] or "?")
    threads = sorted({r.get("threads") or r.get("config", {}).get("threads") for r in everything} - {None})
    commands = sorted({c for r in everything if (c := r.get("command") or r.get("machine", {}).get("command"))})
    lines = ["# attnreuse benchmark report", "", "## Machine and software", ""]
    for key, when in dates.items():
        m = dict(zip(_MACHINE_KEYS, key))
        lines.append(
            f"- CPU {m['cpu']} ({m['logical_cores']} logical cores), {m['platform']}; Python {m['python']}, "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; measured {min(when)} .. {max(when)} UTC"
        )
    lines += [f"- threads: {', '.join(map(str, threads)) or '-'}; inputs: "
              + ", ".join(sorted({f'`{r["_source"]}`' for r in everything}))]  # fmt: skip
    weights = sorted({r["weights"] for r in models if r.get("weights")})
    if weights:
        lines.append(f"- model weights: {'; '.join(weights)}")
    lines.append("")
    lines += ["## Reproduce", "", "```"]
    lines += commands or ["# the inputs recorded no command (bench ops: `attnreuse bench ops` with the settings above)"]
    lines += [command or shlex.join(["attnreuse", "bench", "report", *map(str, paths), "--output", str(out)]), "```", ""]
    lines += _duplicate_lines(models)
    lines += _target_lines(models, exports)
    if models:
        real = [r for r in models if not str(r.get("family")).endswith("_probe")]  # probes are not models to deploy
        _plot_latency(real, "params", "parameters", out / "latency_vs_params.png")
        _plot_latency(real, "macs", "MACs per image", out / "latency_vs_macs.png")
        lines += ["![latency vs params](latency_vs_params.png) ![latency vs MACs](latency_vs_macs.png)", ""]
        lines += _models_section(models)
        speed = _baseline_rows(models)
        if speed:
            _plot_speedups(speed, out / "speedup_vs_baseline.png")
            lines += _baseline_section(speed)
        ceiling = [r for r in models if r.get("share_of_ceiling") is not None]
        if ceiling:
            lines += _ceiling_section(ceiling)
    if ops:
        _plot_ops(ops, "latency_ms_median", "median latency (ms)", out / "ops_latency_vs_tokens.png")
        _plot_ops(ops, "peak_bytes", "peak extra memory (MiB)", out / "ops_memory_vs_tokens.png")
        lines += _ops_section(ops)
    if exports:
        lines += _export_section(exports)
    return atomic_write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="markdown report with plots from bench models / bench ops / export JSON results",
        description="Turn JSON results (files or directories) of `bench models`, `bench ops` and `export` "
        "into OUTPUT/report.md with PNG plots.",
    )
    p.add_argument("inputs", nargs="+", help="JSON result files or directories holding them")
    p.add_argument("--output", "-o", required=True, help="directory for report.md and the plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    command = shlex.join(["attnreuse", "bench", "report", *args.inputs, "--output", args.output])
    path = build_report(args.inputs, args.output, command=command)
    print(f"report: {path}")
    return 0
