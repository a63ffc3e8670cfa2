"""The demo pipeline: four stages, each cached, then the report.

A stage writes `OUTPUT/stages/NAME.json`: its settings (`DemoConfig.stage_config`), the seconds it
took, the machine, and its result. A later run reuses that record while the settings are unchanged,
unless `force`; a stage left out of `stages` keeps its last record, so `--stages minilm` reruns one
stage and the report still shows the others. A stage that cannot run here (the MiniLM stage without
its optional wheel) or that fails is recorded as such, never cached, and the rest runs. Every record
of the run is collected in `OUTPUT/records.json`, from which the report (and the README's Measured
section) is generated.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from attnreuse._io import atomic_write_json
from attnreuse._rundir import claim_output
from attnreuse.demo.config import STAGES, DemoConfig

__all__ = ["RECORDS", "collect_records", "run_demo", "run_stage"]

RECORDS = "records.json"


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _runner(stage: str):
    if stage == "minilm":
        from attnreuse.demo.minilm import run_minilm

        return run_minilm
    if stage == "uniform":
        from attnreuse.demo.vision import run_uniform

        return run_uniform
    if stage == "vit":
        from attnreuse.demo.vision import run_vit

        return run_vit
    from attnreuse.demo.sweep import run_ops

    return run_ops


def _stage_path(root: Path, stage: str) -> Path:
    return root / "stages" / f"{stage}.json"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_stage(stage: str, cfg: DemoConfig, root: Path) -> dict:
    """Run one stage (or reuse its cached record); returns the record, with `cached` for this run."""
    from attnreuse.measure import machine_record

    path = _stage_path(root, stage)
    wanted = json.loads(json.dumps(cfg.stage_config(stage)))
    old = _load(path)
    if not cfg.force and old is not None and old.get("status") == "done" and old.get("config") == wanted:
        _say(f"{stage}: done already ({path}, {old['seconds']:.0f} s when run)")
        # the budget is what the stage should take now: a changed budget applies to the reused result too
        return {**old, "budget_s": cfg.budget_s(stage), "cached": True}
    record = {"stage": stage, "config": wanted, "budget_s": cfg.budget_s(stage), "quick": cfg.quick}
    if stage == "minilm":
        from attnreuse.demo.minilm import missing_reason

        reason = missing_reason()
        if reason is not None:
            print(f"[demo] minilm: skipped: {reason}", file=sys.stderr, flush=True)
            record.update(status="skipped", reason=reason, seconds=0.0)
            atomic_write_json(path, record)
            return {**record, "cached": False}
    t0 = time.perf_counter()
    try:
        result = _runner(stage)(cfg, root)
    except Exception as err:  # noqa: BLE001 - one stage failing does not stop the others
        first = (str(err).strip().splitlines() or [""])[0][:400]
        _say(f"{stage}: failed: {type(err).__name__}: {first}")
        record.update(status="failed", reason=f"{type(err).__name__}: {first}", seconds=time.perf_counter() - t0)
        atomic_write_json(path, record)
        return {**record, "cached": False}
    record.update(status="done", seconds=time.perf_counter() - t0, machine=machine_record(threads=cfg.threads),
                  result=result)
    atomic_write_json(path, record)
    _say(f"{stage}: done in {record['seconds']:.0f} s (budget {record['budget_s']:.0f} s)")
    return {**record, "cached": False}


def collect_records(cfg: DemoConfig, root: Path, ran: dict[str, dict], total_s: float) -> dict:
    """This run's records: the stages run now and the last records of the others."""
    from attnreuse.measure import machine_record

    stages = {}
    for stage in STAGES:
        if stage in ran:
            stages[stage] = ran[stage]
        else:
            old = _load(_stage_path(root, stage))
            stages[stage] = {**old, "cached": True} if old is not None else {"stage": stage, "status": "not run"}
    machine = machine_record(threads=cfg.threads)
    return {"quick": cfg.quick, "threads": cfg.threads, "total_s": total_s, "date_utc": machine["date_utc"],
            "machine": {k: machine[k] for k in ("cpu", "cpu_units", "logical_cores", "platform", "python", "torch", "onnxruntime")},
            "stages": stages}


def run_demo(cfg: DemoConfig) -> tuple[Path, dict]:
    """Run the selected stages, write records.json and the report; returns (report path, records)."""
    from attnreuse.demo.report import write_report

    # one demo per directory at a time (a second one would redo the first one's stages under it);
    # resume: an earlier demo's stages in it are reused, not refused
    with claim_output(cfg.output, resume=True) as root:
        atomic_write_json(root / "demo_config.json", cfg.to_dict())
        t0 = time.perf_counter()
        ran = {}
        selected = [s for s in STAGES if s in cfg.stages]
        for i, stage in enumerate(selected, 1):
            _say(f"[{i}/{len(selected)}] {stage}")
            ran[stage] = run_stage(stage, cfg, root)
        records = collect_records(cfg, root, ran, time.perf_counter() - t0)
        atomic_write_json(root / RECORDS, records)
        report = write_report(records, root)
    _say(f"report written to {report} ({time.perf_counter() - t0:.0f} s)")
    return report, records
