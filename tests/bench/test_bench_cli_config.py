"""`bench ops`, `bench models` and `bench study` take their flags from their config dataclasses:
the defaults agree, every flag spelling of before is kept, and a saved config replays."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from attnreuse._cli_args import config_argv
from attnreuse.bench import models as bench_models
from attnreuse.bench import ops as bench_ops
from attnreuse.bench import study as bench_study
from attnreuse.cli import build_parser

MODULES = {"ops": bench_ops, "models": bench_models, "study": bench_study}
CONFIGS = {"ops": bench_ops.OpsBenchConfig, "models": bench_models.ModelBenchConfig, "study": bench_study.StudyConfig}
# The option strings each command had when its flags were written by hand, plus --config (a
# saved config), --baselines (the positive form of --no-baselines) and --force (how to treat
# existing outputs, not a setting of the run); and the flags added since (models: --exporter,
# --checkpoint, --eval-data, --eval-images).
FLAGS = {
    "ops": {"--ops", "--shapes", "--tokens", "--batch", "--threads", "--dtype", "--repeats", "--rounds", "--quick",
            "--json", "--csv", "--plot", "--config", "--force"},
    "models": {"--batch", "--img-size", "--threads", "--runtimes", "--dtype", "--int8-mode", "--warmup", "--repeats",
               "--min-time", "--exporter", "--rounds", "--no-baselines", "--baselines", "--quick", "--json", "--csv", "--config",
               "--force", "--checkpoint", "--eval-data", "--eval-images"},
    "study": {"--lengths", "--plans", "--config", "--model", "--positions", "--batch", "--threads", "--device",
              "--backend", "--dtype", "--rounds", "--repeats", "--warmup", "--breakdown-repeats", "--check-length",
              "--seed", "--output", "--quick", "--force"},
}  # fmt: skip
# A config away from the defaults in every field that has a flag.
CHANGED = {
    "ops": dict(ops=("sdpa_mha", "reuse"), shapes=("vit",), tokens=(32, 64), batch=(2,), threads=1,
                dtype="bfloat16", repeats=3, rounds=2, json="o.json", csv="o.csv", plot="o.png"),
    "models": dict(models=("uniform_xs",), batch=2, img_sizes=(64, 96), threads=1,
                   runtimes=("eager",), dtype="bfloat16", int8_mode="dynamic", exporter="dynamo", warmup=0, repeats=4,
                   min_time_s=0.25, rounds=2, baselines=False, json="m.json", csv="m.csv", checkpoint="w.safetensors",
                   eval_data="digits", eval_images=8),
    "study": dict(model="whisper-tiny", lengths=(16, 32), plans=("mha", "share2"), positions=64, batch=2, threads=1,
                  device="cuda:1", backend="auto", dtype="bfloat16", rounds=2, repeats=4, warmup=0, breakdown_repeats=2,
                  check_length=32, seed=5, output="out"),
}  # fmt: skip


def _subparser(what: str) -> argparse.ArgumentParser:
    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    return bench._subparsers._group_actions[0].choices[what]


def _parse(what: str, argv: list[str]):
    return MODULES[what].config_from_args(build_parser().parse_args(["bench", what, *argv]))


@pytest.mark.parametrize("what", list(CONFIGS))
def test_no_flags_is_the_dataclass_defaults(what):
    assert _parse(what, []) == CONFIGS[what]()


@pytest.mark.parametrize("what", list(CONFIGS))
def test_the_flags_are_the_ones_before_and_every_cli_field_has_one(what):
    parser = _subparser(what)
    options = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert options == FLAGS[what]
    fields = {f.name for f in dataclasses.fields(CONFIGS[what]) if f.metadata.get("cli", True)}
    assert fields <= {a.dest for a in parser._actions}


@pytest.mark.parametrize("what", list(CONFIGS))
def test_every_changed_field_reaches_the_config_and_the_command_line_replays_it(what):
    config = CONFIGS[what](**CHANGED[what])
    cli = {f.name for f in dataclasses.fields(config) if f.metadata.get("cli", True)}
    assert set(CHANGED[what]) == cli and all(getattr(config, k) != getattr(CONFIGS[what](), k) for k in cli)
    assert _parse(what, config_argv(config)) == config


@pytest.mark.parametrize("what", list(CONFIGS))
def test_a_saved_config_round_trips_with_flags_over_it(what, tmp_path):
    config = CONFIGS[what](**CHANGED[what])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dataclasses.asdict(config)))
    assert _parse(what, ["--config", str(path)]) == config
    assert _parse(what, ["--config", str(path), "--threads", "3"]) == dataclasses.replace(config, threads=3)
    path.write_text(json.dumps({**dataclasses.asdict(config), "threds": 1}))
    with pytest.raises(ValueError, match=r"unknown .*\['threds'\]"):
        _parse(what, ["--config", str(path)])


def test_spellings_the_docs_use():
    ops = _parse("ops", ["--ops", "sdpa_mha", "reuse", "--tokens", "64", "196", "--shapes", "vit"])
    assert ops.ops == ("sdpa_mha", "reuse") and ops.tokens == (64, 196) and ops.shapes == ("vit",)
    models = _parse("models", ["uniform_xs", "uniform_s", "--img-size", "224,384", "--min-time", "3", "--no-baselines",
                               "--runtimes", "eager,ort"])  # fmt: skip
    assert models.models == ("uniform_xs", "uniform_s") and models.img_sizes == (224, 384)
    assert models.min_time_s == 3.0 and models.baselines is False and models.runtimes == ("eager", "ort")
    study = _parse("study", ["--lengths", "250,500", "--plans", "sdpa,share2"])
    assert study.lengths == (250, 500) and study.plans == ("sdpa", "share2")
    with pytest.raises(SystemExit):
        _parse("ops", ["--ops", "flash"])  # choices apply to each of a space-separated list


def test_runtimes_default_to_the_dtypes():
    for dtype, runtimes in bench_models.DTYPE_RUNTIMES.items():
        assert _parse("models", ["--dtype", dtype]).runtimes == runtimes == bench_models.ModelBenchConfig(dtype=dtype).runtimes


def test_quick_presets_yield_to_the_flags_given():
    # --quick is a preset under the flags given with it, in every bench command
    quick = _parse("ops", ["--quick", "--tokens", "32"])
    assert quick.tokens == (32,) and quick.batch == bench_ops.QUICK["batch"] and quick.repeats == bench_ops.QUICK["repeats"]
    models = _parse("models", ["--quick", "--repeats", "50"])
    assert models.repeats == 50 and models.rounds == bench_models.QUICK["rounds"]
    study = _parse("study", ["--quick", "--rounds", "5"])
    assert study.rounds == 5 and study.repeats == bench_study.QUICK["repeats"]
    assert _parse("models", ["--repeats", "50"]).rounds != bench_models.QUICK["rounds"]  # no --quick, no preset


def test_a_directory_is_not_an_output_file(tmp_path, capsys):
    from attnreuse.cli import main

    assert main(["bench", "ops", "--quick", "--json", str(tmp_path)]) == 2
    assert "--json must be a file path" in capsys.readouterr().err
