"""The demo pipeline: train -> measure (eager, ONNX Runtime) -> operator sweep -> report.

Every stage writes its result beside the others under `output`; a second run reuses what is done
(a finished training run, a measurement, the sweep) unless `force`. An interrupted training run
resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from attnreuse._io import atomic_write_json
from attnreuse.demo.config import DemoConfig, DemoModel

__all__ = ["run_demo"]


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _cached(path: Path, force: bool) -> dict | None:
    if force or not path.is_file():
        return None
    return json.loads(path.read_text())


def _train(entry: DemoModel, cfg: DemoConfig, root: Path) -> tuple[dict, bool]:
    """Train (or reuse, or resume) one row; returns (summary, whether it was trained now).

    A finished run is reused only if it was trained with the configuration asked for now; an
    interrupted one with that configuration resumes from its last checkpoint; anything else
    starts over.
    """
    import shutil

    from attnreuse.train.config import TrainConfig
    from attnreuse.train.loop import SUMMARY, train

    run_dir = root / "train" / entry.key
    config = TrainConfig(
        model=entry.model,
        output=str(run_dir),
        data="digits",
        model_kwargs=dict(entry.model_kwargs),
        img_size=entry.img_size,
        epochs=1 if cfg.quick else cfg.epochs,
        warmup_epochs=0 if cfg.quick else min(2, cfg.epochs - 1),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        limit_train_batches=3 if cfg.quick else None,
        threads=cfg.threads,
        progress=cfg.progress,
    )
    previous = run_dir / "config.json"
    same = previous.is_file() and not TrainConfig.load(previous).resume_mismatch(config)
    if same and not cfg.force and (run_dir / SUMMARY).is_file():
        done = json.loads((run_dir / SUMMARY).read_text())
        _say(f"{entry.key}: trained already ({run_dir}), test top-1 {done['test_top1']:.1f}%")
        return done, False
    resume = same and not cfg.force
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    _say(f"{entry.key}: training {entry.model} {entry.model_kwargs or ''}" + (" (resuming)" if resume else ""))
    summary = train(dataclasses.replace(config, resume=resume))
    _say(f"{entry.key}: test top-1 {summary['test_top1']:.1f}% in {summary['time_s']:.0f} s")
    return summary, True


def _measure(entry: DemoModel, cfg: DemoConfig, root: Path, retrained: bool) -> dict:
    """Eager and ONNX Runtime latency (batch 1) and eager peak memory of the trained model
    (reused from an earlier run unless the model was just trained)."""
    import torch

    from attnreuse.measure import measure_latency, measure_peak_bytes, set_threads
    from attnreuse.export.onnx import create_export_model, deploy_model, input_spec, ort_session, run_ort
    from attnreuse.export.pipeline import ExportConfig, run_export

    path = root / "measure" / f"{entry.key}.json"
    done = None if retrained else _cached(path, cfg.force)
    if done is not None:
        return done
    run_dir = root / "train" / entry.key
    threads = set_threads(cfg.threads)
    timing = dict(warmup=2, repeats=5, min_time_s=0.1) if cfg.quick else dict(warmup=10, repeats=50, min_time_s=2.0)
    model = deploy_model(create_export_model(entry.model, checkpoint=str(run_dir)))
    x = torch.randn(1, *input_spec(model))
    with torch.inference_mode():
        eager = measure_latency(lambda: model(x), **timing)
        peak = measure_peak_bytes(lambda: model(x))
    _say(f"{entry.key}: exporting to ONNX and checking parity")
    onnx_path = root / "onnx" / f"{entry.key}.onnx"
    export = run_export(ExportConfig(model=entry.model, output=str(onnx_path), checkpoint=str(run_dir), threads=threads))
    session = ort_session(onnx_path, threads=threads)
    ort = measure_latency(lambda: run_ort(session, x), **timing)
    record = {
        "key": entry.key,
        "model": entry.model,
        "model_kwargs": entry.model_kwargs,
        "input_shape": list(x.shape),
        "threads": threads,
        "params": sum(p.numel() for p in model.parameters()),
        "eager_latency_ms_median": eager.latency_ms_median,
        "eager_latency_ms_p90": eager.latency_ms_p90,
        "eager_peak_bytes": peak,
        "ort_latency_ms_median": ort.latency_ms_median,
        "ort_latency_ms_p90": ort.latency_ms_p90,
        "onnx_max_abs_diff": export["onnx"]["max_abs_diff"],
        "onnx_size_bytes": export["onnx"]["size_bytes"],
    }
    atomic_write_json(path, record)
    _say(
        f"{entry.key}: eager {eager.latency_ms_median:.2f} ms, ONNX Runtime {ort.latency_ms_median:.2f} ms, "
        f"peak {peak / 2**20:.1f} MiB"
    )
    return record


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage; returns the path of the report."""
    from attnreuse.demo.report import write_report
    from attnreuse.demo.sweep import op_sweep

    root = Path(cfg.output)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "demo_config.json", cfg.to_dict())
    t0 = time.perf_counter()
    rows = []
    entries = cfg.selected()
    for i, entry in enumerate(entries, 1):
        _say(f"[{i}/{len(entries)}] {entry.key}")
        summary, retrained = _train(entry, cfg, root)
        rows.append({"entry": entry, "summary": summary, "measure": _measure(entry, cfg, root, retrained)})
    _say("operator sweep")
    ops = op_sweep(cfg, root)
    report = write_report(cfg, root, rows, ops, elapsed_s=time.perf_counter() - t0)
    _say(f"report written to {report} ({time.perf_counter() - t0:.0f} s)")
    return report
