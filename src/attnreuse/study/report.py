"""The accuracy study's report: per-row top-1 over seeds (mean, spread, gap to mha) and the
retrofits' recovery, as markdown and JSON."""

from __future__ import annotations

import statistics
from pathlib import Path

from attnreuse._io import atomic_write_json, atomic_write_text
from attnreuse.study.config import RETROFITS, StudyConfig

__all__ = ["retrofits_table", "rows_table", "summarise", "write_report"]


def _stats(values: list[float]) -> dict:
    return {
        "values": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(cfg: StudyConfig, root: Path, results: dict[str, dict]) -> dict:
    """Numbers only: rows[key] and retrofits[name] with per-seed values and their statistics."""
    root = Path(root)

    def result(*parts: str) -> dict:
        return results[str(root.joinpath(*parts))]

    rows = {}
    for m in cfg.selected():
        top1 = [result("train", f"{m.key}-s{s}")["test_top1"] for s in cfg.seeds]
        rows[m.key] = {"model": m.model, "model_kwargs": m.model_kwargs, "img_size": m.img_size,
                       "steps": result("train", f"{m.key}-s{cfg.seeds[0]}")["steps"], "test_top1": _stats(top1)}
    base = rows["vit-mha"]["test_top1"]["mean"]
    for r in rows.values():
        r["gap_points"] = r["test_top1"]["mean"] - base
        r["within_tolerance"] = r["gap_points"] >= -cfg.tolerance_points
    retro = {}
    for name in cfg.retrofits:
        src = [result("train", f"vit-mha-s{s}")["test_top1"] for s in cfg.seeds]
        conv = [result("convert", f"{name}-s{s}")["converted_val_top1"] for s in cfg.seeds]
        tuned = [result("finetune", f"{name}-s{s}") for s in cfg.seeds]
        gaps = [t["test_top1"] - s for t, s in zip(tuned, src)]
        retro[name] = {
            "plan": RETROFITS[name],
            "source_test_top1": _stats(src),
            "converted_val_top1": _stats(conv),
            "finetuned_test_top1": _stats([t["test_top1"] for t in tuned]),
            "gap_points": _stats(gaps),
            "finetune_steps": tuned[0]["steps"],
            "source_steps": rows["vit-mha"]["steps"],
            "within_tolerance": statistics.fmean(gaps) >= -cfg.tolerance_points,
        }
    return {"config": cfg.to_dict(), "baseline_mean": base, "rows": rows, "retrofits": retro}


def _pm(s: dict) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def _in_config_order(data: dict, what: str) -> list[str]:
    """The keys of data[what] in the order the config lists them (a saved study.json has its keys sorted)."""
    listed = [k for k in data.get("config", {}).get(what, []) if k in data[what]]
    return listed + [k for k in data[what] if k not in listed]


def rows_table(data: dict) -> list[str]:
    """The per-row table of `summarise`'s output (or a saved study.json), as markdown lines."""
    lines = [
        "| Row | Model | Input (px) | Per seed (%) | Mean ± std (%) | Gap to mha (points) | Within tolerance |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in _in_config_order(data, "rows"):
        r = data["rows"][key]
        plan = r["model_kwargs"].get("attn_plan", "")
        lines.append(
            f"| {key} | {r['model']} {plan if plan else ''}".rstrip() + f" | {r['img_size'] or 'default'} | "
            + ", ".join(f"{v:.2f}" for v in r["test_top1"]["values"])
            + f" | {_pm(r['test_top1'])} | {r['gap_points']:+.2f} | {'yes' if r['within_tolerance'] else 'no'} |"
        )
    return lines


def retrofits_table(data: dict) -> list[str]:
    """The retrofit table (source, converted, fine-tuned, gap) of `summarise`'s output, as markdown lines."""
    lines = [
        "| Plan | Source test (%) | Converted, before fine-tune: val (%) | After fine-tune: test (%) | "
        "Gap to source (points) | Steps (fine-tune / source) | Within tolerance |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in _in_config_order(data, "retrofits"):
        r = data["retrofits"][name]
        lines.append(
            f"| {name} (`{r['plan']}`) | {_pm(r['source_test_top1'])} | {_pm(r['converted_val_top1'])} | "
            f"{_pm(r['finetuned_test_top1'])} | {_pm(r['gap_points'])} | {r['finetune_steps']} / "
            f"{r['source_steps']} | {'yes' if r['within_tolerance'] else 'no'} |"
        )
    return lines


def write_report(cfg: StudyConfig, root: Path, results: dict[str, dict], *, argv: list[str],
                 elapsed_s: float, run_s: float) -> Path:
    """Write study.json and the markdown report; `run_s`: the sum of every run's own wall time."""
    from attnreuse.measure import machine_record

    root = Path(root)
    data = summarise(cfg, root, results)
    data["machine"] = machine = machine_record()
    data["run_time_s"] = run_s
    atomic_write_json(root / "study.json", data)
    seeds = ", ".join(map(str, cfg.seeds))
    lines = [
        "# Accuracy study: attention plans on digits",
        "",
        f"Machine: {machine['cpu']} ({machine['logical_cores']} logical cores), python {machine['python']}, "
        f"torch {machine['torch']}, {machine['date_utc']}. {cfg.jobs} runs at a time, {cfg.threads_per_job} thread(s) each; "
        f"the runs took {run_s:.0f} s of wall time one by one ({elapsed_s:.0f} s for this invocation, which "
        f"reuses finished runs).",
        "",
        f"Reproduce: `attnreuse {' '.join(argv)}`",
        "",
        f"Recipe (every row): {cfg.run_epochs} epochs, batch {cfg.batch_size}, AdamW lr {cfg.lr}, warm-up + cosine, "
        f"label smoothing 0.1; seeds {seeds}; top-1 on the digits test split. Mean ± sample standard deviation "
        f"over seeds; the gap is to the mha row's mean (tolerance {cfg.tolerance_points} point).",
        "",
        *rows_table(data),
    ]
    if data["retrofits"]:
        lines += [
            "",
            "## Retrofit: each mha run converted, then distilled from itself",
            "",
            f"`attnreuse convert` (weights carried over, new parts fitted on calibration images), then "
            f"`attnreuse train --init CONVERTED --teacher SOURCE` for {cfg.finetune_epochs} epochs at lr "
            f"{cfg.finetune_lr} with one warm-up epoch ({cfg.finetune_fraction:.0%} of the source's epochs, at least one).",
            "",
            *retrofits_table(data),
        ]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
