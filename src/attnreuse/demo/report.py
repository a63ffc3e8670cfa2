"""The demo's report, generated from its records alone (`OUTPUT/records.json`).

`report_sections(records)` is the text shared by `OUTPUT/report.md` and the README's Measured
section: five opening lines (what ran, the machine, and one line per group of mechanisms with this
run's numbers), then the MiniLM table first and the other stages' tables. `write_report` adds the
plots (every point and series labelled) and the time of each stage.
"""

from __future__ import annotations

from pathlib import Path

from attnreuse._io import atomic_path, atomic_write_text
from attnreuse.demo.config import STAGES

__all__ = ["opening_lines", "report_sections", "write_report"]

_KNOBS = {"minilm": "minilm_distill_steps", "uniform": "uniform_min_time_s / uniform_rounds",
          "vit": "vit_img_sizes / vit_rounds", "ops": "op_tokens"}
_TITLES = {"minilm": "pretrained all-MiniLM-L6-v2", "uniform": "UniForm against EfficientViT-M",
           "vit": "ViT-S plans", "ops": "operators against N"}


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def _result(records: dict, stage: str) -> dict | None:
    rec = records["stages"].get(stage, {})
    return rec.get("result") if rec.get("status") == "done" else None


def _why_not(records: dict, stage: str) -> str:
    rec = records["stages"].get(stage, {})
    status = rec.get("status", "not run")
    return f"{status}: {rec['reason']}" if rec.get("reason") else status


def _plan_name(model: str) -> str:
    """A ViT-S model's plan from its name (family first, as timm's): vit_attnreuse_* -> mha,
    vit_reuse_* -> reuse, vit_mapshare_* -> share groups, deit_taylor_* -> taylor."""
    variant = model.split("_")[1]
    return {"attnreuse": "mha", "mapshare": "share groups", "skipat": "skip"}.get(variant, variant)


def _vit(res: dict, plan: str, img: int) -> dict | None:
    return next((r for r in res["records"] if _plan_name(r["model"]) == plan and r["img_size"] == img), None)


def _op(res: dict, op: str, n: int) -> dict | None:
    return next((r for r in res["records"] if r["op"] == op and r["tokens"] == n and r["latency_ms_median"]), None)


# ----------------------------------------------------------------------------- the five lines


def _ort_keys(rows: list[dict]) -> tuple[str, str, str]:
    """(float32 key, int8 key, how the graphs ran) of a MiniLM stage's ONNX Runtime records: attention
    fused in every graph since 2026-12-01 (`demo.minilm.ORT_RUNTIMES`); earlier records are decomposed."""
    if all("ort-fused" in r for r in rows):
        return "ort-fused", "ort-int8-fused", "attention fused in every graph"
    return "ort", "ort-int8", "decomposed graphs"


def _line_minilm(records: dict) -> str:
    res = _result(records, "minilm")
    if res is None:
        return f"- **Map sharing / reuse in a pretrained transformer** (all-MiniLM-L6-v2): not measured ({_why_not(records, 'minilm')})."
    d = next(r for r in res["rows"] if r["role"] == "distilled")
    orig = res["rows"][0]
    saving = 1 - d["macs"] / orig["macs"]
    ort, q8, how = _ort_keys(res["rows"])
    text = (f"- **Map sharing in a pretrained transformer** (all-MiniLM-L6-v2, `{d['plan']}`, {_pct(saving)} fewer "
            f"MACs at {res['tokens']} tokens): embedding cosine {d['zero_shot']['cosine']:.3f} zero-shot, "
            f"{d['distilled']['cosine']:.3f} after {res['distill']['steps']} distillation steps (top-10 overlap "
            f"{_pct(d['zero_shot']['topk_overlap'])} -> {_pct(d['distilled']['topk_overlap'])}); "
            f"{_x(d['eager']['speedup'])} the speed of sdpa in eager, {_x(d[ort]['speedup'])} under ONNX Runtime "
            f"({how}; MAC ideal {_x(d['mac_ideal'])})")
    if d.get("int8_fidelity") is not None and q8 in d:
        text += (f"; in ONNX Runtime's dynamic int8 {_x(d[q8]['speedup_vs_baseline_fp32'])} the original's "
                 f"float32 export, cosine {d['int8_fidelity']['cosine']:.3f}")
    s = next((r for r in res["rows"] if r["role"] == "suggested"), None)
    if s is not None:
        text += (f"; the analysis' suggestion `{s['plan']}` zero-shot: cosine {s['zero_shot']['cosine']:.3f}, "
                 f"{_x(s['eager']['speedup'])} / {_x(s[ort]['speedup'])}")
    return text + "."


def _line_reuse(records: dict) -> str:
    parts = []
    uni, vit, ops = _result(records, "uniform"), _result(records, "vit"), _result(records, "ops")
    if uni is not None:
        e, o = uni["summary"]["eager"], uni["summary"]["ort"]
        parts.append(f"{uni['model']} is {_x(e['speedup'])} the speed of {uni['baseline']} in eager and "
                     f"{_x(o['speedup'])} under ONNX Runtime at {uni['img_size']} px"
                     + (f", {_pct(e['share_of_gain'])} / {_pct(o['share_of_gain'])} of what removing attention work "
                        f"altogether gives ({_x(e['ceiling'])} / {_x(o['ceiling'])})"
                        if e["share_of_gain"] is not None and o["share_of_gain"] is not None else
                        f"; removing attention work altogether gives {_x(e['ceiling'])} / {_x(o['ceiling'])}"))
    else:
        parts.append(f"UniForm stage {_why_not(records, 'uniform')}")
    if vit is not None:
        big = max(vit["img_sizes"])
        r, s = _vit(vit, "reuse", big), _vit(vit, "share groups", big)
        if r is not None:
            parts.append(f"ViT-S reuse plan {_x(r['speedup_vs_baseline_paired'])} at {big} px (ideal {_x(r['ideal_speedup_vs_baseline'])})"
                         + (f", share groups {_x(s['speedup_vs_baseline_paired'])} (ideal {_x(s['ideal_speedup_vs_baseline'])})" if s else ""))
    if ops is not None:
        pts = [(n, _op(ops, "reuse", n)) for n in sorted({r["tokens"] for r in ops["records"]})]
        pts = [f"{_x(_vs_sdpa(p))} at N={n}" for n, p in pts if p is not None]
        if pts:
            parts.append("the reuse operator against SDPA: " + ", ".join(pts))
    return "- **Reuse Attention** (one map for every value head): " + "; ".join(parts) + "."


def _line_taylor_flat(records: dict) -> str:
    parts = []
    vit, ops = _result(records, "vit"), _result(records, "ops")
    if vit is not None:
        big = max(vit["img_sizes"])
        t = _vit(vit, "taylor", big)
        if t is not None:
            parts.append(f"ViT-S Taylor plan {_x(t['speedup_vs_baseline_paired'])} the speed of mha at {big} px "
                         f"(ideal {_x(t['ideal_speedup_vs_baseline'])})")
    if ops is not None:
        n = max(r["tokens"] for r in ops["records"] if r["latency_ms_median"])
        t, f, s = _op(ops, "taylor", n), _op(ops, "flat_mha", n), _op(ops, "sdpa_mha", n)
        if t is not None:
            parts.append(f"the Taylor operator {_x(_vs_sdpa(t))} SDPA's speed at N={n}")
        if f is not None and s is not None:
            parts.append(f"attnreuse's FLAT-tiled MHA {_x(_vs_sdpa(f))} at N={n}, peak memory "
                         f"{f['peak_bytes'] / 2**20:.1f} MiB against SDPA's {s['peak_bytes'] / 2**20:.1f} MiB")
    if not parts:
        return f"- **Taylor attention and FLAT tiling**: not measured (ViT-S stage {_why_not(records, 'vit')}; operators {_why_not(records, 'ops')})."
    return "- **Taylor attention and FLAT tiling**: " + "; ".join(parts) + "."


def opening_lines(records: dict) -> list[str]:
    """Five lines: what ran, on what machine, and where each mechanism wins or loses."""
    st = records["stages"]
    done = [s for s in STAGES if st.get(s, {}).get("status") == "done"]
    ran = (f"- **What ran**: `attnreuse demo{' --quick`, smoke sizes: not results' if records['quick'] else '`'}, "
           f"{len(done)} of {len(st)} stages ({', '.join(_TITLES[s] for s in done) or 'none'}); "
           f"this invocation {records['total_s']:.0f} s (stage times at the end).")
    m = records["machine"]
    machine = (f"- **Machine**: {m['cpu']}, {m['logical_cores']} logical cores, {records['threads']} threads, float32, "
               f"batch 1; torch {m['torch']}, ONNX Runtime {m['onnxruntime'] or '-'}; {records['date_utc'][:10]}.")
    return [ran, machine, _line_minilm(records), _line_reuse(records), _line_taylor_flat(records)]


# ----------------------------------------------------------------------------- tables


def minilm_table(res: dict) -> str:
    """The stage's table; records with the int8 runtime (since 2026-12-01) add its columns."""
    ort, q8, _ = _ort_keys(res["rows"])
    int8 = all(q8 in r for r in res["rows"])
    head = ("| model | plan | MACs saved | zero-shot cosine / top-10 | distilled cosine / top-10 | eager ms | vs sdpa "
            "| ONNX Runtime ms | vs original | MAC ideal |")
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    if int8:
        head += " int8 ms | int8 vs original float32 | int8 cosine / top-10 |"
        rule += "---|---|---|"
    orig_macs = res["rows"][0]["macs"]
    lines = []
    for r in res["rows"]:
        fid = lambda f: "-" if f is None else f"{f['cosine']:.3f} / {_pct(f['topk_overlap'])}"  # noqa: E731
        line = (f"| {r['role']} | `{r['plan']}` | {_pct(1 - r['macs'] / orig_macs)} | {fid(r['zero_shot'])} | "
                f"{fid(r['distilled'])} | {_ms(r['eager']['latency_ms_median'])} | {_x(r['eager']['speedup'])} | "
                f"{_ms(r[ort]['latency_ms_median'])} | {_x(r[ort]['speedup'])} | {_x(r['mac_ideal'])} |")
        if int8:
            q = r[q8]
            line += f" {_ms(q['latency_ms_median'])} | {_x(q['speedup_vs_baseline_fp32'])} | {fid(r.get('int8_fidelity'))} |"
        lines.append(line)
    return f"{head}\n{rule}\n" + "\n".join(lines) + "\n"


def uniform_table(res: dict) -> str:
    head = f"| model | eager ms | vs {res['baseline']} | ONNX Runtime ms | vs {res['baseline']} |\n|---|---|---|---|---|\n"
    by = {(r["model"], r["runtime"]): r for r in res["records"]}
    lines = []
    for name in (res["baseline"], res["model"], res["probe"]):
        e, o = by[(name, "eager")], by[(name, "ort")]
        label = f"{name} (no-attention ceiling)" if name == res["probe"] else name
        lines.append(f"| {label} | {_ms(e['latency_ms_median'])} | {_x(e['speedup_vs_baseline_paired']) if name != res['baseline'] else 'baseline'} | "
                     f"{_ms(o['latency_ms_median'])} | {_x(o['speedup_vs_baseline_paired']) if name != res['baseline'] else 'baseline'} |")
    s = res["summary"]
    lines.append(f"| share of the possible gain taken | | {_pct(s['eager']['share_of_gain'])} | | {_pct(s['ort']['share_of_gain'])} |")
    lines.append(f"| mixer-level speed-up | | {_x(s['eager']['mixer_speedup'])} | | {_x(s['ort']['mixer_speedup'])} |")
    return head + "\n".join(lines) + "\n"


def _of_ideal(record: dict) -> float | None:
    """The paired speed-up over the MAC ideal (the table's two columns beside it), else the pooled
    `fraction_of_ideal` of a record without pairing."""
    paired, ideal = record.get("speedup_vs_baseline_paired"), record.get("ideal_speedup_vs_baseline")
    return paired / ideal if paired is not None and ideal else record.get("fraction_of_ideal")


def vit_table(res: dict) -> str:
    head = "| plan | px | GMACs | eager ms | vs mha (paired) | MAC ideal | of ideal |\n|---|---|---|---|---|---|---|\n"
    lines = [
        f"| {_plan_name(r['model'])} | {r['img_size']} | {r['macs'] / 1e9:.2f} | {_ms(r['latency_ms_median'])} | "
        f"{_x(r.get('speedup_vs_baseline_paired')) if r.get('baseline') else 'baseline'} | "
        f"{_x(r.get('ideal_speedup_vs_baseline'))} | {_pct(_of_ideal(r))} |"
        for r in sorted(res["records"], key=lambda r: (r["img_size"], r.get("baseline") is not None))
    ]
    return head + "\n".join(lines) + "\n"


def _vs_sdpa(record: dict) -> float | None:
    """An operator's speed-up over SDPA: paired round by round where the record has it (`bench ops`
    times each N's operators in interleaved rounds), else the ratio of pooled medians."""
    paired = record.get("speedup_vs_sdpa_mha_paired")
    return paired if paired is not None else record.get("speedup_vs_sdpa_mha")


def ops_table(res: dict) -> str:
    done = sorted((r for r in res["records"] if r["latency_ms_median"]), key=lambda r: (r["tokens"], r["op"]))
    paired = bool(done) and all(r.get("speedup_vs_sdpa_mha_paired") is not None for r in done)
    head = f"| op | N | ms (p90) | vs SDPA{', paired over rounds' if paired else ''} | peak MiB |\n|---|---|---|---|---|\n"
    lines = [f"| {r['op']} | {r['tokens']} | {_ms(r['latency_ms_median'])} ({_ms(r['latency_ms_p90'])}) | "
             f"{_x(_vs_sdpa(r))} | {r['peak_bytes'] / 2**20:.1f} |" for r in done]
    return head + "\n".join(lines) + "\n"


_NOTES = {
    "minilm": ("Fidelity on held-out docstrings of Python's standard library: cosine of mean-pooled embeddings "
               "against the original, and the share of each text's 10 nearest neighbours both models agree on. "
               "Latency at {tokens} tokens, batch 1, paired round by round against the original under "
               "`attn_implementation=\"sdpa\"` (eager) or the original exported (ONNX Runtime); MACs by PyTorch's "
               "FLOP counter."),
    "uniform": ("Random weights at {img_size} px, paired round by round. The probe is {model} with every mixer cut "
                "to its two 1x1 convs: no attention work at all. Share of the gain = (T_base - T_model) / (T_base - "
                "T_probe); mixer-level speed-up = (T_base - T_probe) / (T_model - T_probe)."),
    "vit": "Random-weight ViT-S (12 blocks, 6 heads) with each plan, eager, paired against the mha plan; MAC ideal = MACs(mha) / MACs(plan).",
    "ops": "Batch 1, 8 heads of 32 (reuse: one query/key head for the 8 value heads); peak = extra memory of one call.",
}


_INT8_NOTE = (" int8: ONNX Runtime's dynamic int8 of each export (`hf export --int8`), its speed-up paired against "
              "the original's float32 export timed in the same rounds, and its fidelity on the same held-out texts.")
_FUSED_NOTE = (" (`--fused-attention mha`; a `share` layer and the layer whose map it applies stay decomposed), so the"
               " original's export is measured at its best, not slowed by its decomposed mask and NaN-guard passes.")


def _title(stage: str) -> str:
    return _TITLES[stage][0].upper() + _TITLES[stage][1:]


def report_sections(records: dict, images: dict[str, list[str]] | None = None) -> str:
    """The opening lines and every stage's table (the text the README's Measured section holds),
    with `images` (stage -> PNG paths) after each stage's table."""
    out = ["\n".join(opening_lines(records)) + "\n"]
    tables = {"minilm": minilm_table, "uniform": uniform_table, "vit": vit_table, "ops": ops_table}
    for stage, table in tables.items():
        res = _result(records, stage)
        out.append(f"### {_title(stage)}\n")
        if res is None:
            out.append(f"Not measured: {_why_not(records, stage)}.\n")
            continue
        out.append(table(res))
        note = _NOTES[stage].format(**res)
        if stage == "minilm":
            ort, q8, how = _ort_keys(res["rows"])
            note += f" ONNX Runtime: {how}" + (_FUSED_NOTE if ort == "ort-fused" else ".")
            if all(q8 in r for r in res["rows"]):
                note += _INT8_NOTE
        out.append(note + "\n")
        for f in (images or {}).get(stage, []):
            out.append(f"![{Path(f).stem.replace('_', ' ')}]({f})\n")
    out.append("### Time of each stage\n")
    out.append(_stage_times(records))
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots


def _figure(path: Path, fig) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path.name


def label_offsets(points: list[tuple[float, float]], *, step_pt: float = 9.0) -> list[tuple[float, float]]:
    """Offsets (in points) for the labels of `points` so that labels of points lying close together
    (within 4% of the x range and 3% of the y range) stack downwards instead of overprinting."""
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float, int]] = []
    out = []
    for x, y in points:
        near = {k for px, py, k in placed if abs(px - x) <= 0.04 * dx and abs(py - y) <= 0.03 * dy}
        k = next(i for i in range(len(points)) if i not in near)
        placed.append((x, y, k))
        out.append((4.0, 4.0 - step_pt * k))
    return out


def _plots(records: dict, root: Path) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, list[str]] = {}
    res = _result(records, "minilm")
    if res is not None:
        fig, ax = plt.subplots(figsize=(9, 4.4))
        labels: list[tuple[str, float, float]] = []
        ort, q8, _ = _ort_keys(res["rows"])
        for runtime, marker, label, short in (("eager", "o", "PyTorch eager", "eager"), (ort, "s", "ONNX Runtime", "ORT")):
            pts = [(r["role"], r[runtime]["latency_ms_median"], r["distilled"] or r["zero_shot"]) for r in res["rows"]]
            xs = [p[1] for p in pts]
            ys = [1.0 if p[2] is None else p[2]["cosine"] for p in pts]
            ax.scatter(xs, ys, marker=marker, label=label)
            for (role, *_), x, y in zip(pts, xs, ys):
                name = role if role != "suggested" else "suggested, zero-shot"
                labels.append((f"{name} ({short})", x, y))
        q = [r for r in res["rows"] if q8 in r and r.get("int8_fidelity") is not None]
        if q:  # the int8 graphs: their own fidelity, measured on the same texts
            xs, ys = [r[q8]["latency_ms_median"] for r in q], [r["int8_fidelity"]["cosine"] for r in q]
            ax.scatter(xs, ys, marker="^", label="ONNX Runtime, dynamic int8")
            labels += [(f"{r['role']} (int8)", x, y) for r, x, y in zip(q, xs, ys)]
        d = next(r for r in res["rows"] if r["role"] == "distilled")
        ax.scatter([d["eager"]["latency_ms_median"]], [d["zero_shot"]["cosine"]], marker="x", color="grey", label="distilled plan before distillation (eager)")
        labels.append(("distilled plan, zero-shot", d["eager"]["latency_ms_median"], d["zero_shot"]["cosine"]))
        for (text, x, y), offset in zip(labels, label_offsets([(x, y) for _, x, y in labels])):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=7)
        ax.set(xlabel=f"latency at {res['tokens']} tokens, batch 1 (ms, median)", ylabel="embedding cosine to the original",
               title="all-MiniLM-L6-v2: fidelity against latency")
        ax.grid(alpha=0.3)
        ax.margins(x=0.15, y=0.08)  # room for the labels of the outermost points
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the points, not over them
        made["minilm"] = [_figure(root / "minilm_fidelity_vs_latency.png", fig)] + res["heatmaps"]
    res = _result(records, "uniform")
    if res is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        runtimes = (("eager", "PyTorch eager"), ("ort", "ONNX Runtime"))
        for i, (name, label) in enumerate(((res["model"], f"{res['model']} (Reuse Attention)"),
                                           (res["probe"], f"{res['model']}, no attention work (ceiling)"))):
            key = "speedup" if name == res["model"] else "ceiling"
            values = [res["summary"][rt][key] for rt, _ in runtimes]
            bars = ax.bar([j + 0.38 * i for j in range(len(runtimes))], values, width=0.38, label=label)
            ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values], fontsize=8)
        ax.axhline(1.0, color="grey", linestyle="--", label=f"{res['baseline']} (baseline)")
        ax.set_xticks([j + 0.19 for j in range(len(runtimes))], [label for _, label in runtimes])
        ax.set(ylabel=f"speed-up over {res['baseline']} (paired)", title=f"UniForm against EfficientViT-M at {res['img_size']} px")
        ax.legend(fontsize=8, loc="upper left")
        made["uniform"] = [_figure(root / "uniform_speedup.png", fig)]
    res = _result(records, "vit")
    if res is not None:
        fig, ax = plt.subplots(figsize=(6, 4.4))
        pts = [r for r in res["records"] if r.get("baseline")]
        xs = [r["ideal_speedup_vs_baseline"] for r in pts]
        ys = [r["speedup_vs_baseline_paired"] for r in pts]
        ax.scatter(xs, ys, label="measured (eager, paired)")
        for r, x, y in zip(pts, xs, ys):
            ax.annotate(f"{_plan_name(r['model'])} {r['img_size']} px", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        lo, hi = min(xs + ys + [1.0]) * 0.95, max(xs + ys + [1.0]) * 1.05
        ax.plot([lo, hi], [lo, hi], "--", color="grey", label="speed-up = MAC ideal")
        ax.set(xlabel="MAC ideal speed-up over mha", ylabel="measured speed-up over mha", title="ViT-S plans against the MAC ideal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        made["vit"] = [_figure(root / "vit_speedup_vs_ideal.png", fig)]
    res = _result(records, "ops")
    if res is not None:
        from attnreuse.bench.ops import plot

        machine = {"cpu": records["machine"]["cpu"], "threads": records["threads"], "dtype": "float32"}
        plot([{**r, "machine": machine} for r in res["records"]], root / "ops_vs_tokens.png")
        made["ops"] = ["ops_vs_tokens.png"]
    return made


def _stage_times(records: dict) -> str:
    lines = ["| stage | status | seconds | budget s | this run |", "|---|---|---|---|---|"]
    for stage in STAGES:
        rec = records["stages"].get(stage, {})
        secs = rec.get("seconds")
        over = secs is not None and rec.get("budget_s") and secs > rec["budget_s"] and not rec.get("quick")
        note = "reused (cached)" if rec.get("cached") else "ran"
        if over:
            note += f"; over budget: lower {_KNOBS[stage]}"
        lines.append(f"| {stage} | {rec.get('status', 'not run')} | {'-' if secs is None else f'{secs:.0f}'} | "
                     f"{rec.get('budget_s', '-')} | {note} |")
    return "\n".join(lines) + "\n"


def write_report(records: dict, root: Path) -> Path:
    """OUTPUT/report.md and its plots from `records` (as `run_demo` collects them)."""
    body = report_sections(records, _plots(records, root))
    text = (f"# attnreuse demo report\n\n{body}\n"
            "Rerun one stage with `attnreuse demo --stages NAME --force`; the digits training study is "
            "`attnreuse study`.\n")
    return atomic_write_text(root / "report.md", text)
