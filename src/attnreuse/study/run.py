"""The accuracy study: train every row for every seed, retrofit the mha runs, then report.

Every run is an `attnreuse train` / `attnreuse convert` command run as its own process (`jobs`
at a time, `threads_per_job` threads each: on a small CPU several one-thread runs finish sooner
than one run after another). A run whose output holds a result of the same command is reused;
anything else is redone from scratch, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from attnreuse._io import atomic_write_json
from attnreuse.study.config import RETROFITS, StudyConfig
from attnreuse.study.report import write_report

__all__ = ["Job", "run_study", "study_jobs"]

JOB_JSON = "study_job.json"


@dataclass(frozen=True)
class Job:
    """One command; `result` is the JSON file it leaves in `output` when it finished."""

    key: str
    output: Path
    argv: tuple[str, ...]
    result: str


def _say(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


def _train_argv(cfg: StudyConfig, model: str | None, kwargs: dict, img_size: int | None, seed: int, out: Path,
                epochs: int, lr: float, warmup_epochs: int, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """An `attnreuse train` command; model None: the model comes from `--init` in `extra`."""
    argv = ["train"]
    if model is not None:
        argv += ["--model", model, "--model-kwargs", json.dumps(kwargs, sort_keys=True)]
    argv += ["--seed", str(seed), "--epochs", str(epochs), "--batch-size", str(cfg.batch_size), "--lr", str(lr),
            "--warmup-epochs", str(min(warmup_epochs, epochs - 1)),
            "--threads", str(cfg.threads_per_job), "--no-progress", "--output", str(out)]
    if img_size is not None:
        argv += ["--img-size", str(img_size)]
    if cfg.quick:
        argv += ["--limit-train-batches", "3"]
    return (*argv, *extra)


def study_jobs(cfg: StudyConfig) -> tuple[list[Job], list[Job], list[Job]]:
    """(training runs, conversions, distillation fine-tunes), each stage depending on the last."""
    root = Path(cfg.output)
    rows = {m.key: m for m in cfg.selected()}
    train_jobs = []
    for key, m in rows.items():
        for seed in cfg.seeds:
            out = root / "train" / f"{key}-s{seed}"
            train_jobs.append(Job(f"{key} seed {seed}", out,
                                  _train_argv(cfg, m.model, m.model_kwargs, m.img_size, seed, out, cfg.run_epochs, cfg.lr, 2),
                                  "summary.json"))
    mha = rows["vit-mha"]
    converts, tunes = [], []
    for name in cfg.retrofits:
        for seed in cfg.seeds:
            source = root / "train" / f"vit-mha-s{seed}"
            conv = root / "convert" / f"{name}-s{seed}"
            converts.append(Job(f"convert mha seed {seed} -> {name}", conv,
                                ("convert", "--checkpoint", str(source), "--plan", RETROFITS[name], "--seed", str(seed),
                                 "--output", str(conv)) + (("--fit-steps", "20", "--calib-batches", "1") if cfg.quick else ()),
                                "convert.json"))
            out = root / "finetune" / f"{name}-s{seed}"
            extra = ("--init", str(conv), "--teacher", str(source))
            # The converted model (its plan included) comes from --init; the teacher is the source run.
            tunes.append(Job(f"fine-tune {name} seed {seed}", out,
                             _train_argv(cfg, None, {}, mha.img_size, seed, out, cfg.finetune_epochs,
                                         cfg.finetune_lr, 1, extra), "summary.json"))
    return train_jobs, converts, tunes


def _done(job: Job, force: bool) -> bool:
    record = job.output / JOB_JSON
    if force or not (job.output / job.result).is_file() or not record.is_file():
        return False
    return json.loads(record.read_text()).get("argv") == list(job.argv)


def _run(job: Job, force: bool) -> dict:
    if _done(job, force):
        _say(f"{job.key}: done already ({job.output})")
        return json.loads((job.output / job.result).read_text())
    if job.output.exists():
        shutil.rmtree(job.output)
    job.output.mkdir(parents=True)
    t0 = time.perf_counter()
    log = job.output / "log.txt"
    with log.open("w") as fh:
        rc = subprocess.call([sys.executable, "-m", "attnreuse.cli", *job.argv], stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{job.key} failed (exit {rc}); log {log}:\n{tail}")
    atomic_write_json(job.output / JOB_JSON, {"argv": list(job.argv), "time_s": time.perf_counter() - t0})
    result = json.loads((job.output / job.result).read_text())
    _say(f"{job.key}: done in {time.perf_counter() - t0:.0f} s")
    return result


def _stage(jobs: list[Job], cfg: StudyConfig) -> dict[str, dict]:
    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        results = list(pool.map(lambda j: _run(j, cfg.force), jobs))
    return {str(j.output): r for j, r in zip(jobs, results)}


def run_study(cfg: StudyConfig) -> Path:
    """Run every stage; returns the path of the markdown report."""
    root = Path(cfg.output)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "study_config.json", cfg.to_dict())
    t0 = time.perf_counter()
    train_jobs, converts, tunes = study_jobs(cfg)
    _say(f"{len(train_jobs)} training runs, {len(converts)} conversions, {len(tunes)} fine-tunes, {cfg.jobs} at a time")
    results = {**_stage(train_jobs, cfg), **_stage(converts, cfg), **_stage(tunes, cfg)}
    # every run's own wall time, as recorded when it ran (also for reused runs)
    run_s = sum(json.loads((j.output / JOB_JSON).read_text())["time_s"] for j in (*train_jobs, *converts, *tunes))
    report = write_report(cfg, root, results, argv=sys.argv[1:], elapsed_s=time.perf_counter() - t0, run_s=run_s)
    _say(f"report written to {report} ({time.perf_counter() - t0:.0f} s)")
    return report
