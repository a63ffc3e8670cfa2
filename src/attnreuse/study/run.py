"""The accuracy study: train every row for every seed, retrofit the mha runs, then report.

Every run is an `attnreuse train` / `attnreuse convert` command run as its own process (`jobs`
at a time, `threads_per_job` threads each: on a small CPU several one-thread runs finish sooner
than one run after another). A run whose output holds a result of the same command is reused;
anything else is redone from scratch, so an interrupted study continues where it stopped. Each
command is written from the tool's own config dataclass (`TrainConfig`, `ConvertConfig`) by
`config_argv`, so it states only what differs from the tool's defaults; the resolved config is
recorded beside the command, so a changed default is a changed run, not a reused one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from attnreuse._cli_args import config_argv
from attnreuse._io import atomic_write_json
from attnreuse._rundir import claim_output
from attnreuse.study.config import RETROFITS, StudyConfig
from attnreuse.study.report import write_report
from attnreuse.train.config import ConvertConfig, TrainConfig

__all__ = ["Job", "JobFailed", "run_study", "study_jobs"]

JOB_JSON = "study_job.json"
JOB_FORMAT = 2  # what JOB_JSON records: 2 = the command and its resolved config (1: the command alone)


class JobFailed(RuntimeError):
    """A run of the study exited non-zero; the message names it, its last log line and its log."""


@dataclass(frozen=True)
class Job:
    """One command; `result` is the JSON file it leaves in `output` when it finished. `argv` is
    written from `config` (`config_argv`), the run's whole configuration as the tool resolves it."""

    key: str
    output: Path
    argv: tuple[str, ...]
    result: str
    config: dict

    @classmethod
    def of(cls, key: str, config: TrainConfig | ConvertConfig, result: str) -> Job:
        verb = "train" if isinstance(config, TrainConfig) else "convert"
        # the config as JSON reads it back (tuples become lists), to compare with a recorded one
        resolved = json.loads(json.dumps(dataclasses.asdict(config)))
        return cls(key, Path(config.output), (verb, *config_argv(config)), result, resolved)


def _say(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


def _train(cfg: StudyConfig, out: Path, *, seed: int, epochs: int, lr: float, warmup_epochs: int, img_size: int | None,
           **fields) -> TrainConfig:
    """The `attnreuse train` run of the study's recipe; `fields`: the model (or --init) and teacher."""
    return TrainConfig(
        output=str(out), seed=seed, epochs=epochs, batch_size=cfg.batch_size, lr=lr,
        warmup_epochs=min(warmup_epochs, epochs - 1), threads=cfg.threads_per_job, progress=False,
        img_size=img_size, limit_train_batches=3 if cfg.quick else None, **fields,
    )  # fmt: skip


def study_jobs(cfg: StudyConfig) -> tuple[list[Job], list[Job], list[Job]]:
    """(training runs, conversions, distillation fine-tunes), each stage depending on the last."""
    root = Path(cfg.output)
    rows = {m.key: m for m in cfg.selected()}
    train_jobs = []
    for key, m in rows.items():
        for seed in cfg.seeds:
            run = _train(cfg, root / "train" / f"{key}-s{seed}", seed=seed, epochs=cfg.run_epochs, lr=cfg.lr,
                         warmup_epochs=2, img_size=m.img_size, model=m.model, model_kwargs=m.model_kwargs)
            train_jobs.append(Job.of(f"{key} seed {seed}", run, "summary.json"))
    mha = rows["vit-mha"]
    converts, tunes = [], []
    quick = dict(fit_steps=20, calib_batches=1) if cfg.quick else {}
    for name in cfg.retrofits:
        for seed in cfg.seeds:
            source = root / "train" / f"vit-mha-s{seed}"
            conv = ConvertConfig(checkpoint=str(source), plan=RETROFITS[name], output=str(root / "convert" / f"{name}-s{seed}"),
                                 seed=seed, **quick)
            converts.append(Job.of(f"convert mha seed {seed} -> {name}", conv, "convert.json"))
            # The converted model (its plan included) comes from --init: an attnreuse ViT converts
            # to itself, so its name is the source row's; the teacher is the source run.
            tune = _train(cfg, root / "finetune" / f"{name}-s{seed}", seed=seed, epochs=cfg.finetune_epochs,
                          lr=cfg.finetune_lr, warmup_epochs=1, img_size=mha.img_size, model=mha.model,
                          init=conv.output, teacher=str(source))
            tunes.append(Job.of(f"fine-tune {name} seed {seed}", tune, "summary.json"))
    return train_jobs, converts, tunes


def _done(job: Job, force: bool) -> bool:
    """A finished run of the same command and the same resolved configuration. Records from before
    the configuration was recorded (format 1: the command alone) are not reused: the same command
    could then have meant other defaults."""
    record = job.output / JOB_JSON
    if force or not (job.output / job.result).is_file() or not record.is_file():
        return False
    done = json.loads(record.read_text())
    return done.get("format") == JOB_FORMAT and done.get("argv") == list(job.argv) and done.get("config") == job.config


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
        last = ([line for line in log.read_text().splitlines() if line.strip()] or ["(no output)"])[-1]
        raise JobFailed(f"{job.key} failed (exit {rc}): {last.strip()} (its log: {log})")
    record = {"format": JOB_FORMAT, "argv": list(job.argv), "config": job.config, "time_s": time.perf_counter() - t0}
    atomic_write_json(job.output / JOB_JSON, record)
    result = json.loads((job.output / job.result).read_text())
    _say(f"{job.key}: done in {time.perf_counter() - t0:.0f} s")
    return result


def _stage(jobs: list[Job], cfg: StudyConfig) -> dict[str, dict]:
    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        results = list(pool.map(lambda j: _run(j, cfg.force), jobs))
    return {str(j.output): r for j, r in zip(jobs, results)}


def run_study(cfg: StudyConfig) -> Path:
    """Run every stage; returns the path of the markdown report."""
    # one study per directory at a time: a second one would remove and redo the first one's runs
    # under it (resume: a directory holding an earlier study's runs is continued, not refused)
    with claim_output(cfg.output, resume=True) as root:
        t0 = time.perf_counter()
        train_jobs, converts, tunes = study_jobs(cfg)
        _say(f"{len(train_jobs)} training runs, {len(converts)} conversions, {len(tunes)} fine-tunes, {cfg.jobs} at a time")
        results = {**_stage(train_jobs, cfg), **_stage(converts, cfg), **_stage(tunes, cfg)}
        # every run's own wall time, as recorded when it ran (also for reused runs)
        run_s = sum(json.loads((j.output / JOB_JSON).read_text())["time_s"] for j in (*train_jobs, *converts, *tunes))
        report = write_report(cfg, root, results, argv=sys.argv[1:], elapsed_s=time.perf_counter() - t0, run_s=run_s)
        # with the report it describes: a study stopped part-way leaves the last report's config beside it
        atomic_write_json(root / "study_config.json", cfg.to_dict())
    _say(f"report written to {report} ({time.perf_counter() - t0:.0f} s)")
    return report
