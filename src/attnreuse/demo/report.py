"""The demo's report: runs/demo/report.md with the accuracy-vs-latency table and PNG plots."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from attnreuse._io import atomic_path, atomic_write_text
from attnreuse.demo.config import DemoConfig

__all__ = ["write_report"]


def _plot_accuracy(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for runtime, marker in (("eager", "o"), ("ort", "s")):
        xs = [r["measure"][f"{runtime}_latency_ms_median"] for r in rows]
        ys = [r["summary"]["test_top1"] for r in rows]
        ax.scatter(xs, ys, marker=marker, label="PyTorch eager" if runtime == "eager" else "ONNX Runtime")
        if runtime == "eager":
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(r["entry"].key, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("latency, batch 1 (ms, median)")
    ax.set_ylabel("digits test top-1 (%)")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _speedup(rows: list[dict], row: dict, runtime: str) -> str:
    base = row["entry"].baseline
    if base is None:
        return "baseline"
    ref = next((r for r in rows if r["entry"].key == base), None)
    if ref is None:
        return "-"
    key = f"{runtime}_latency_ms_median"
    return f"{ref['measure'][key] / row['measure'][key]:.2f}x"


def model_table(rows: list[dict]) -> str:
    head = (
        "| model | plan | params | test top-1 | eager ms (p90) | vs mha | ONNX Runtime ms (p90) | vs mha | "
        "eager peak MiB | ONNX max abs diff |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        e, s, m = r["entry"], r["summary"], r["measure"]
        plan = e.model_kwargs.get("attn_plan", "reuse (UniForm)")
        plan = plan if isinstance(plan, str) else ",".join(plan)
        lines.append(
            f"| {e.key} | {plan} | {m['params'] / 1e6:.2f}M | {s['test_top1']:.1f}% | "
            f"{m['eager_latency_ms_median']:.2f} ({m['eager_latency_ms_p90']:.2f}) | {_speedup(rows, r, 'eager')} | "
            f"{m['ort_latency_ms_median']:.2f} ({m['ort_latency_ms_p90']:.2f}) | {_speedup(rows, r, 'ort')} | "
            f"{m['eager_peak_bytes'] / 2**20:.1f} | {m['onnx_max_abs_diff']:.1e} |"
        )
    return head + "\n".join(lines) + "\n"


def ops_table(records: list[dict]) -> str:
    head = "| op | N | batch | Hq/Hv | ms (p90) | peak MiB | GFLOP/s | of matmul peak |\n|---|---|---|---|---|---|---|---|\n"
    done = [r for r in records if r["latency_ms_median"] is not None]
    lines = [
        f"| {r['op']} | {r['tokens']} | {r['batch']} | {r['qk_heads']}/{r['v_heads']} | "
        f"{r['latency_ms_median']:.2f} ({r['latency_ms_p90']:.2f}) | {r['peak_bytes'] / 2**20:.1f} | "
        f"{r['gflops_per_s']:.1f} | {100 * r['fraction_of_matmul_peak']:.0f}% |"
        for r in sorted(done, key=lambda r: (r["tokens"], r["op"]))
    ]
    return head + "\n".join(lines) + "\n"


def write_report(cfg: DemoConfig, root: Path, rows: list[dict], ops: list[dict], elapsed_s: float) -> Path:
    from attnreuse.measure import machine_record

    _plot_accuracy(rows, root / "accuracy_vs_latency.png")
    machine = machine_record(threads=cfg.threads)
    command = "attnreuse " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "attnreuse demo"
    epochs = 1 if cfg.quick else cfg.epochs
    text = f"""# attnreuse demo report

Machine: {machine.get('cpu', '?')}, {machine.get('logical_cores', '?')} logical cores; torch {machine.get('torch', '?')},
onnxruntime {machine.get('onnxruntime', '-')}; {cfg.threads} threads; float32; batch 1; {machine.get('date_utc', '')}.
Reproduce: `{command}` (total {elapsed_s:.0f} s{', quick smoke configuration' if cfg.quick else ''}).

Data: scikit-learn digits (1797 8x8 images, upscaled), fixed train/val/test split; {epochs} epochs each,
seed {cfg.seed}, same recipe for every row (AdamW, warm-up + cosine, label smoothing).
The ViT rows are `vit_attnreuse_pico_patch4_32` narrowed to 4 blocks of width 64 (4 heads, 64 tokens + CLS)
with the named plan;
uniform_xs runs at 64x64.

## Accuracy, latency and memory

{model_table(rows)}
![accuracy against latency](accuracy_vs_latency.png)

## Attention operators against N

{ops_table(ops)}
![operators against N](ops_vs_tokens.png)

Baseline: PyTorch's fused `scaled_dot_product_attention` with one map per head. One run; ratios
between rows are from the same run.
"""
    return atomic_write_text(root / "report.md", text)
