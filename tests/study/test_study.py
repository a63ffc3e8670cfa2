"""The accuracy study: job plan, statistics, caching and one quick end-to-end run."""

import dataclasses
import json

import pytest

from attnreuse.study.config import StudyConfig
from attnreuse.study.report import summarise
from attnreuse.study.run import run_study, study_jobs


def test_jobs_cover_rows_seeds_and_retrofits(tmp_path):
    cfg = StudyConfig(output=str(tmp_path), rows=("vit-mha", "vit-taylor"), seeds=(3, 4), epochs=10)
    train, converts, tunes = study_jobs(cfg)
    assert [j.output.name for j in train] == ["vit-mha-s3", "vit-mha-s4", "vit-taylor-s3", "vit-taylor-s4"]
    assert all("--img-size" in j.argv and j.argv[j.argv.index("--img-size") + 1] == "16" for j in train)
    assert [j.output.name for j in converts] == ["share-s3", "share-s4", "skip-s3", "skip-s4"]
    assert converts[2].argv[converts[2].argv.index("--plan") + 1] == "skipat:1,2"
    tune = tunes[0].argv
    assert tune[tune.index("--epochs") + 1] == "2"  # 20% of 10 epochs
    assert tune[tune.index("--teacher") + 1] == str(tmp_path / "train" / "vit-mha-s3")
    assert tune[tune.index("--init") + 1] == str(tmp_path / "convert" / "share-s3")
    assert tune[tune.index("--model") + 1] == "vit_attnreuse_pico_patch4_32"  # the plan comes from --init
    assert tune[tune.index("--warmup-epochs") + 1] == "1" and "--no-progress" in tune


def test_every_command_reads_back_as_its_recorded_config(tmp_path):
    from attnreuse._cli_args import config_from_args
    from attnreuse.cli import build_parser
    from attnreuse.train.config import ConvertConfig, TrainConfig

    cfg = StudyConfig(output=str(tmp_path), seeds=(0,), quick=True)
    for job in (j for stage in study_jobs(cfg) for j in stage):
        cls = TrainConfig if job.argv[0] == "train" else ConvertConfig
        parsed = config_from_args(cls, build_parser().parse_args(list(job.argv)))
        assert json.loads(json.dumps(dataclasses.asdict(parsed))) == job.config, job.key
        assert "--data" not in job.argv and "--min-lr" not in job.argv  # defaults are not restated


def test_a_record_without_the_config_is_not_reused(tmp_path):
    from attnreuse.study.run import JOB_JSON, _done

    cfg = StudyConfig(output=str(tmp_path), rows=("vit-mha",), seeds=(0,), retrofits=())
    job = study_jobs(cfg)[0][0]
    job.output.mkdir(parents=True)
    (job.output / "summary.json").write_text("{}")
    record = {"format": 2, "argv": list(job.argv), "config": job.config, "time_s": 1.0}
    (job.output / JOB_JSON).write_text(json.dumps(record))
    assert _done(job, force=False)
    (job.output / JOB_JSON).write_text(json.dumps({"argv": list(job.argv), "time_s": 1.0}))  # format 1
    assert not _done(job, force=False)
    other = {**job.config, "min_lr": 0.5}  # the same command, resolved under another default
    (job.output / JOB_JSON).write_text(json.dumps({**record, "config": other}))
    assert not _done(job, force=False)


def test_summary_statistics_and_verdicts(tmp_path):
    cfg = StudyConfig(output=str(tmp_path), rows=("vit-mha", "vit-reuse"), seeds=(0, 1), retrofits=("skip",))
    train, converts, tunes = study_jobs(cfg)
    top1 = {"vit-mha-s0": 96.0, "vit-mha-s1": 98.0, "vit-reuse-s0": 95.0, "vit-reuse-s1": 96.5}
    results = {str(j.output): {"test_top1": top1[j.output.name], "steps": 100} for j in train}
    results |= {str(j.output): {"converted_val_top1": 50.0} for j in converts}
    results |= {str(j.output): {"test_top1": t, "steps": 20} for j, t in zip(tunes, (96.5, 95.0))}
    data = summarise(cfg, tmp_path, results)
    assert data["baseline_mean"] == 97.0
    reuse = data["rows"]["vit-reuse"]
    assert reuse["test_top1"]["mean"] == 95.75 and reuse["gap_points"] == -1.25 and not reuse["within_tolerance"]
    assert reuse["test_top1"]["std"] == pytest.approx(1.0606601717798212)
    skip = data["retrofits"]["skip"]
    assert skip["gap_points"]["values"] == [0.5, -3.0] and not skip["within_tolerance"]
    assert skip["finetune_steps"] == 20 and skip["source_steps"] == 100


@pytest.mark.parametrize(
    "kwargs, match",
    [({"rows": ("vit-reuse",)}, "vit-mha"), ({"rows": ("nope",)}, "rows"), ({"seeds": (1, 1)}, "seeds"),
     ({"retrofits": ("taylor",)}, "retrofits"), ({"finetune_fraction": 0.0}, "finetune_fraction"),
     ({"vit_img_size": 18}, "vit_img_size"), ({"jobs": 0}, "jobs"),
     # nan passed: a nan tolerance failed every retrofit with nothing said
     ({"tolerance_points": float("nan")}, "tolerance_points must be a finite"),
     ({"finetune_lr": float("nan")}, "finetune_lr"), ({"tolerance_points": float("inf")}, "tolerance_points")],
)
def test_bad_configuration_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StudyConfig(**kwargs)


def test_quick_study_end_to_end_and_reuse(tmp_path):
    """The README's `attnreuse study --quick ...` command as written there (README.md's doc test
    leaves it to this test), then the same config again through the API: it reuses every run."""
    from attnreuse.cli import main

    assert main(["study", "--quick", "--rows", "vit-mha,vit-taylor", "--seeds", "0", "--retrofits", "share",
                 "--output", str(tmp_path)]) == 0
    cfg = StudyConfig(output=str(tmp_path), rows=("vit-mha", "vit-taylor"), seeds=(0,), retrofits=("share",), quick=True)
    report = (tmp_path / "report.md").read_text()
    for needle in ("| vit-mha |", "| vit-taylor |", "share (`mapshare:2`)", "Reproduce:"):
        assert needle in report, needle
    data = json.loads((tmp_path / "study.json").read_text())
    assert set(data["rows"]) == {"vit-mha", "vit-taylor"} and set(data["retrofits"]) == {"share"}
    assert json.loads((tmp_path / "study_config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
    # A second run reuses every finished run (same commands): no summary is rewritten.
    summaries = sorted(tmp_path.rglob("summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    run_study(cfg)
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
