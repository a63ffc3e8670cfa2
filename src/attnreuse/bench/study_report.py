"""The closing note of `attnreuse bench study`: the plan x N table, the issue's three checks, and
two plots (the breakdown stacked per length; speed-up over sdpa against N, measured and predicted).
matplotlib is imported only to draw."""

from __future__ import annotations

from pathlib import Path

from attnreuse.bench.study import BASELINE, CONFORMER_PART, PARTS, REFERENCE, REST_PARTS

__all__ = ["CHECKS", "check_records", "format_table", "latency_table", "write_report"]

CHECKS = {
    "coverage_tolerance": 0.10,  # sum of the measured parts (rest included) vs the uninstrumented end-to-end time
    "of_predicted_min": 0.90,  # measured / Amdahl-predicted speed-up over mha at the check length
    "growth_step_slack": 0.02,  # a step of the speed-up-vs-N curve may dip this much (timing noise)
}
_LABELS = {
    "qk_proj": "Q/K projections", "scores_softmax": "scores + softmax", "av": "A.V",
    "core": "one-step core (fused SDPA / linear Taylor)", "v_proj": "V projection", "out_proj": "output projection",
    "ffn": "FFN", "rest": "rest (conv stem, norms, residuals, reshapes; each measured)",
}  # fmt: skip


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(records: list[dict], header: bool = True) -> str:
    head = (f"{'plan':<10} {'frames':>6} {'median ms':>10} {'vs sdpa':>8} {'vs mha':>7} {'pred':>6} {'of pred':>7} "
            f"{'attn %':>6} {'cover':>6} {'instr':>6} {'peak MiB':>9}")
    lines = [head, "-" * len(head)] if header else []
    for r in records:
        lines.append(
            f"{r['plan']:<10} {r['frames']:>6} {r['latency_ms_median']:>10.2f} {r['speedup_vs_sdpa']:>8.2f} "
            f"{r['speedup_vs_mha']:>7.2f} {_f(r.get('predicted_speedup_vs_mha'), '6.2f'):>6} "
            f"{_f(r.get('of_predicted'), '7.2f'):>7} {100 * r['attention_share']:>6.1f} "
            f"{r['breakdown_coverage']:>6.2f} {r['instrumentation_overhead']:>6.2f} {r['peak_bytes'] / 2**20:>9.1f}"
        )
    return "\n".join(lines)


def _check_length(records: list[dict], wanted: int) -> int:
    lengths = sorted({r["frames"] for r in records})
    return wanted if wanted in lengths else lengths[-1]


def check_records(records: list[dict], check_length: int) -> list[tuple[str, bool, str]]:
    """(what, passed, detail) for the issue's three targets."""
    out = []
    tol = CHECKS["coverage_tolerance"]
    worst = max(records, key=lambda r: abs(r["breakdown_coverage"] - 1))
    out.append((f"the breakdown (sum of the measured parts, rest included) is within {tol:.0%} of the uninstrumented end-to-end time",
                abs(worst["breakdown_coverage"] - 1) <= tol,
                f"worst: {worst['plan']} at {worst['frames']} frames, {worst['breakdown_coverage']:.3f}x"))
    slack = CHECKS["growth_step_slack"]
    for plan in sorted({r["plan"] for r in records if r["plan"].startswith("share")}):
        curve = [r["speedup_vs_sdpa"] for r in sorted((r for r in records if r["plan"] == plan), key=lambda r: r["frames"])]
        grows = len(curve) > 1 and curve[-1] > curve[0] and all(b >= a * (1 - slack) for a, b in zip(curve, curve[1:]))
        out.append((f"{plan}: speed-up over sdpa grows with N", grows, " -> ".join(f"{v:.2f}" for v in curve)))
    at = _check_length(records, check_length)
    low = CHECKS["of_predicted_min"]
    for r in records:
        if r["frames"] == at and r.get("of_predicted") is not None and r["plan"] != REFERENCE:
            out.append((f"{r['plan']} at {at} frames: measured speed-up over mha >= {low:.0%} of the Amdahl prediction",
                        r["of_predicted"] >= low,
                        f"{r['speedup_vs_mha']:.2f}x of {r['predicted_speedup_vs_mha']:.2f}x predicted ({r['of_predicted']:.2f})"))
    return out


def _plans(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["plan"] for r in records))


def plot_breakdown(records: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["frames"] for r in records})
    plans = _plans(records)
    fig, axes = plt.subplots(1, len(lengths), figsize=(max(8.0, 3.2 * len(lengths)), 5.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, n in zip(axes[0], lengths):
        rows = {r["plan"]: r for r in records if r["frames"] == n}
        bottom = [0.0] * len(plans)
        for j, part in enumerate(PARTS):
            heights = [rows[p][f"ms_{part}"] if p in rows else 0.0 for p in plans]
            ax.bar(plans, heights, bottom=bottom, color=colors[j % len(colors)], label=_LABELS[part])
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.scatter(plans, [rows[p]["latency_ms_median"] if p in rows else 0.0 for p in plans], marker="_", s=300,
                   color="black", zorder=3, label="measured end-to-end (no hooks)")
        ax.set_title(f"N = {n} frames")
        ax.set_ylabel("ms per forward")
        ax.tick_params(axis="x", rotation=45)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2 if len(lengths) < 4 else 3, fontsize=8)
    fig.tight_layout(rect=(0, 0.24, 1, 1))
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    """Write the figure atomically (a crash mid-write leaves the earlier plot or none) and close it."""
    import matplotlib.pyplot as plt

    from attnreuse._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)


def plot_speedup(records: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, plan in enumerate(p for p in _plans(records) if p != BASELINE):
        rows = sorted((r for r in records if r["plan"] == plan), key=lambda r: r["frames"])
        color = plt.get_cmap("tab10").colors[i % 10]
        ax.plot([r["frames"] for r in rows], [r["speedup_vs_sdpa"] for r in rows], "o-", color=color, label=f"{plan} measured")
        if plan != REFERENCE and rows and rows[0].get("predicted_speedup_vs_sdpa") is not None:
            ax.plot([r["frames"] for r in rows], [r["predicted_speedup_vs_sdpa"] for r in rows], "--", color=color,
                    label=f"{plan} predicted from the mha breakdown")
    ax.axhline(1.0, color="gray", lw=0.8, label="sdpa baseline")
    ax.set_xlabel("sequence length N (frames)")
    ax.set_ylabel("speed-up over transformers' sdpa encoder")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return path


def latency_table(records: list[dict]) -> list[str]:
    """The report's first table (plan x N: ms / speed-up over sdpa / attention share), as lines."""
    lengths = sorted({r["frames"] for r in records})
    rows = {(r["plan"], r["frames"]): r for r in records}
    lines = ["| plan | " + " | ".join(f"N={n}: ms / vs sdpa / attn %" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for plan in _plans(records):
        cells = []
        for n in lengths:
            r = rows.get((plan, n))
            cells.append("-" if r is None else
                         f"{r['latency_ms_median']:.1f} / {r['speedup_vs_sdpa']:.2f}x / {100 * r['attention_share']:.0f}%")
        lines.append(f"| {plan} | " + " | ".join(cells) + " |")
    return lines


def write_report(records: list[dict], config, out: Path) -> Path:
    """report.md, breakdown.png and speedup.png in `out`."""
    from attnreuse._io import atomic_write_text
    from attnreuse.bench.ops import dtype_label

    plot_breakdown(records, out / "breakdown.png")
    plot_speedup(records, out / "speedup.png")
    first = records[0]
    pieces = REST_PARTS + (CONFORMER_PART,) * (f"ms_rest_{CONFORMER_PART}" in first)  # a Conformer's convolution module
    device = config.device if config.device == "cpu" else f"{config.device} ({first.get('cuda_device')})"
    at = _check_length(records, config.check_length)
    lines = [
        f"# Map reuse on {config.model}'s encoder: latency by plan and sequence length",
        "",
        f"CPU: {first['cpu']} ({first['logical_cores']} logical cores), {config.threads} threads; device "
        f"{device}; batch {config.batch}, {dtype_label({**first, 'dtype': first.get('dtype', 'float32')})}; "
        f"torch {first['torch']}; attnreuse plans "
        f"on the `{config.backend}` ops backend; random weights at the real widths and depths"
        + (f"; positions extended to {first['positions']} (Whisper's sinusoids continued past 1500)."
           if first.get("positions_extended") else "."),
        "",
        f"Command: `{config.command}`",
        "",
        "Latency: median of uninstrumented forwards timed in interleaved rounds; speed-ups are paired "
        "round by round. cover: the measured parts' sum over an uninstrumented forward timed next to "
        "each instrumented one (median over pairs). attn %: share of the measured parts spent in attention (projections, "
        "scores + softmax, A.V, fused/linear cores). Every part, the rest included, is timed by marks "
        "(the interval between two marks goes to the innermost open part); the instrumented forward's "
        "overhead is its paired ratio to an uninstrumented forward timed next to it.",
        "",
        *latency_table(records),
        "",
        "## Checks",
        "",
        *(f"- [{'x' if ok else ' '}] {what}: {detail}" for what, ok, detail in check_records(records, config.check_length)),
        "",
        f"## Amdahl at {at} frames",
        "",
        "Predicted speed-up over mha = T_mha / (T_mha - removed), removed = the parts of the mha plan's "
        "measured breakdown that each layer's kind does not compute (taylor's prediction leaves out the "
        "linear core it adds, so it is an upper bound).",
        "",
        "| plan | removed ms | predicted vs mha | measured vs mha | of predicted |",
        "|---|---|---|---|---|",
        *(f"| {r['plan']} | {r['predicted_removed_ms']:.1f} | {r['predicted_speedup_vs_mha']:.2f}x | "
          f"{r['speedup_vs_mha']:.2f}x | {r['of_predicted']:.2f} |"
          for r in records if r["frames"] == at and r.get("of_predicted") is not None),
        "",
        "## Breakdown (ms per forward, summed over layers)",
        "",
        "| plan | N | " + " | ".join(PARTS) + " | sum of parts | measured | cover (paired) | cover (vs rounds) "
        "| instr. overhead |",
        "|---|---|" + "---|" * (len(PARTS) + 5),
        *(f"| {r['plan']} | {r['frames']} | " + " | ".join(f"{r[f'ms_{p}']:.1f}" for p in PARTS)
          + f" | {r['breakdown_total_ms']:.1f} | {r['latency_ms_median']:.1f} | {r['breakdown_coverage']:.2f} | "
          f"{r['breakdown_coverage_rounds']:.2f} | {r['instrumentation_overhead']:.2f} |" for r in records),
        "",
        "The rest, piece by piece (ms): " + ", ".join(pieces) + "." + (f" stem: {first['stem']}." if first.get("stem") else ""),
        "",
        "| plan | N | " + " | ".join(pieces) + " |",
        "|---|---|" + "---|" * len(pieces),
        *(f"| {r['plan']} | {r['frames']} | " + " | ".join(f"{r[f'ms_rest_{p}']:.1f}" for p in pieces) + " |"
          for r in records),
        "",
        "![breakdown per length](breakdown.png)",
        "",
        "![speed-up against N](speedup.png)",
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(lines))
