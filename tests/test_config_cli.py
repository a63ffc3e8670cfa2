"""The command lines of train, convert, export and study are generated from their config
dataclasses: a default has one home, and the defaults that used to drift agree."""

import dataclasses
import inspect
import json

import pytest

from attnreuse._cli_args import config_from_args
from attnreuse.analysis.config import AnalyzeConfig
from attnreuse.cli import build_parser
from attnreuse.deploy import DEFAULT_EXPORTER, export_onnx
from attnreuse.export.pipeline import ExportConfig
from attnreuse.study.config import StudyConfig
from attnreuse.train.config import ConvertConfig, TrainConfig

REQUIRED = {
    TrainConfig: (["train", "--model", "m", "--output", "o"], dict(model="m", output="o")),
    ConvertConfig: (["convert", "--checkpoint", "c", "--plan", "reuse", "--output", "o"],
                    dict(checkpoint="c", plan="reuse", output="o")),
    ExportConfig: (["export", "m", "--output", "m.onnx"], dict(model="m", output="m.onnx")),
    StudyConfig: (["study"], {}),
    AnalyzeConfig: (["analyze", "--output", "o", "--model", "m"], dict(model="m", output="o")),
}


def _config(cls, argv):
    return config_from_args(cls, build_parser().parse_args(argv))


@pytest.mark.parametrize("cls", list(REQUIRED), ids=lambda c: c.__name__)
def test_every_field_is_a_flag_with_the_dataclass_default(cls):
    argv, required = REQUIRED[cls]
    assert _config(cls, argv) == cls(**required)
    parser = build_parser()
    help_text = parser._subparsers._group_actions[0].choices[argv[0]].format_help()
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) and not f.metadata.get("positional"):
            flag = (f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))[0]
            assert flag in help_text, f"{cls.__name__}.{f.name} has no {flag}"


def test_the_drifted_defaults_agree():
    # warm-up: min(3, epochs - 1) on the command line and in the dataclass alike
    assert TrainConfig(model="m", output="o", epochs=2).warmup_epochs == 1
    assert TrainConfig(model="m", output="o").warmup_epochs == 3
    assert _config(TrainConfig, ["train", "--model", "m", "--output", "o", "--epochs", "2"]).warmup_epochs == 1
    # clip_grad: 0 and None both disable clipping
    assert TrainConfig(model="m", output="o", clip_grad=0.0).clip_grad is None
    assert _config(TrainConfig, ["train", "--model", "m", "--output", "o", "--clip-grad", "0"]).clip_grad is None
    # the data loader workers: --workers as before, --num-workers as the field is named
    for flag in ("--workers", "--num-workers"):
        assert _config(TrainConfig, ["train", "--model", "m", "--output", "o", flag, "3"]).num_workers == 3
    # one exporter default for the export tool and the function it calls
    assert ExportConfig(model="m", output="m.onnx").exporter == DEFAULT_EXPORTER
    assert inspect.signature(export_onnx).parameters["exporter"].default == DEFAULT_EXPORTER


def test_a_saved_config_file_with_flags_over_it(tmp_path):
    saved = TrainConfig(model="m", output="o", epochs=7, model_kwargs={"attn_plan": "reuse"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved.to_dict()))
    cfg = _config(TrainConfig, ["train", "--config", str(path), "--lr", "0.01", "--model-kwargs", "depth=2"])
    assert cfg == dataclasses.replace(saved, lr=0.01, model_kwargs={"depth": 2})
    study = _config(StudyConfig, ["study", "--seeds", "3,4", "--rows", "vit-mha,vit-taylor", "--quick"])
    assert study.seeds == (3, 4) and study.rows == ("vit-mha", "vit-taylor") and study.quick
    with pytest.raises(ValueError, match="--output is required"):
        _config(TrainConfig, ["train", "--model", "m"])


ROUND_TRIPS = [
    TrainConfig(model="m", output="o", model_kwargs={"attn_plan": ["mha", "share"], "depth": 2}, epochs=5,
                lr=0.0003, warmup_epochs=0, clip_grad=1.5, ema_decay=0.99, progress=False, resume=True,
                num_workers=2, threads=1, img_size=32, init="run", teacher="t", distill="hard"),
    ConvertConfig(checkpoint="c", plan='["mha", "skip"]', output="o", fit_lr=0.01, fit_steps=3, seed=7),
    ExportConfig(model="m", output="m.onnx"),
    StudyConfig(rows=("vit-mha", "vit-skip"), seeds=(4, 2), quick=True, vit_img_size=32, lr=0.01),
    AnalyzeConfig(output="o", checkpoint="run", model_kwargs={"depth": 2}, mac_budget=0.5, head_threshold=-0.25),
]


@pytest.mark.parametrize("config", ROUND_TRIPS, ids=lambda c: type(c).__name__)
def test_a_config_written_as_flags_reads_back_the_same(config):
    from attnreuse._cli_args import config_argv

    verb = REQUIRED[type(config)][0][0]
    argv = config_argv(config)
    assert _config(type(config), [verb, *argv]) == config
    # defaults are not restated; a default resolved from other fields (warm-up) is, as resolved
    resolved = ["--warmup-epochs", "3"] if type(config) is TrainConfig else []
    argv, required = REQUIRED[type(config)]
    assert config_argv(type(config)(**required)) == argv[1:] + resolved


def test_a_value_the_command_line_cannot_spell_is_named():
    from attnreuse._cli_args import config_argv

    with pytest.raises(ValueError, match="clip_grad=None cannot be written as --clip-grad"):
        config_argv(TrainConfig(model="m", output="o", clip_grad=None))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "--checkpoint", "run", "--plan", "reuse", "--output", "out", "--fit-steps", "-1"],
         "--fit-steps must be a positive int, got -1"),
        (["bench", "models", "uniform_xs", "--img-size", "8"], "--img-size must be ints >= 16"),
        (["bench", "models", "uniform_xs", "--dtype", "bfloat16", "--eval-images", "0"], "--eval-images must be"),
        (["export", "uniform_xs", "--output", "m.onnx", "--opset", "0"], "--opset must be"),
    ],
)
def test_a_bad_value_is_named_by_its_flag(capsys, argv, message):
    """The configs name their fields (fit_steps); on the command line the message names the flag
    the user typed (--fit-steps), in one line."""
    from attnreuse.cli import main

    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_flag_spelling_changes_only_a_leading_field_name():
    from attnreuse._cli_args import flag_spelling
    from attnreuse.bench.models import ModelBenchConfig

    assert flag_spelling(ConvertConfig, "fit_steps must be a positive int") == "--fit-steps must be a positive int"
    assert flag_spelling(ModelBenchConfig, "img_sizes must be ints") == "--img-size must be ints"  # its own flag
    assert flag_spelling(ModelBenchConfig, "models must be a tuple") == "models must be a tuple"  # positional
    assert flag_spelling(ConvertConfig, "the plan fit_steps x") == "the plan fit_steps x"
    assert flag_spelling(ConvertConfig, "fit_steps") == "fit_steps"
