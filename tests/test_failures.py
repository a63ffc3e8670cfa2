"""Every user mistake of issue #17 ends in one line naming the problem, a non-zero exit and nothing
written: unknown models, unreadable or mismatched weights, unusable --output, a run directory in
use, a run that would be overwritten, non-finite rates, empty lists, missing data, Ctrl-C."""

import json
import os
import stat

import pytest
import torch
from cliutil import fails as _fails

from attnreuse import cli
from attnreuse._io import new_file_mode
from attnreuse._rundir import claim_output
from attnreuse.models import create_model
from attnreuse.runs import save_model_weights

PICO = "vit_attnreuse_pico_patch4_32"


@pytest.fixture
def run_dir(tmp_path):
    """A train-style run directory of a 2-layer pico ViT (model.json + model.safetensors)."""
    d = tmp_path / "run"
    d.mkdir()
    model = create_model(PICO, depth=2)
    (d / "model.json").write_text(json.dumps({"name": PICO, "kwargs": {"depth": 2}}))
    save_model_weights(d / "model.safetensors", model.state_dict())
    return d


@pytest.mark.parametrize("argv", [
    ["train", "--model", "no_such_vit", "--epochs", "2"],
    ["convert", "--model", "no_such_vit", "--checkpoint", "{ckpt}", "--plan", "reuse"],
    ["analyze", "--model", "no_such_vit"],
    ["train", "--model", PICO, "--teacher", "no_such_vit", "--teacher-checkpoint", "{ckpt}", "--epochs", "2"],
])
def test_unknown_model_is_one_line_and_writes_nothing(capsys, tmp_path, run_dir, argv):
    out = tmp_path / "out"
    argv = [a.replace("{ckpt}", str(run_dir / "model.safetensors")) for a in argv] + ["--output", str(out)]
    _fails(capsys, argv, "unknown model 'no_such_vit'")
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 7, None])
@pytest.mark.parametrize("verb", ["convert", "analyze", "init"])
def test_unreadable_weights_name_the_file(capsys, tmp_path, run_dir, content, verb):
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100] if content is None else content)
    out = tmp_path / "out"
    argv = {
        "convert": ["convert", "--checkpoint", str(run_dir), "--plan", "reuse"],
        "analyze": ["analyze", "--checkpoint", str(run_dir)],
        "init": ["train", "--init", str(run_dir), "--epochs", "2"],
    }[verb] + ["--output", str(out)]
    _fails(capsys, argv, str(weights), "not a readable .safetensors")
    assert not out.exists()


def test_weights_of_another_shape_name_the_checkpoint(capsys, tmp_path, run_dir):
    save_model_weights(run_dir / "model.safetensors", create_model(PICO, depth=2, embed_dim=64).state_dict())
    _fails(capsys, ["analyze", "--checkpoint", str(run_dir), "--output", str(tmp_path / "a")],
           f"checkpoint {run_dir} does not fit the model", "size mismatch")


def test_output_that_is_a_file_is_refused_before_any_work(capsys, tmp_path, run_dir):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    _fails(capsys, ["convert", "--checkpoint", str(run_dir), "--plan", "reuse", "--output", str(target)],
           f"--output {target} is an existing file")
    assert target.read_text() == "keep"


def test_a_run_is_not_overwritten_without_force(capsys, tmp_path, run_dir):
    (run_dir / "metrics.jsonl").write_text("old\n")
    _fails(capsys, ["analyze", "--model", PICO, "--output", str(run_dir)], "already holds a run", "--force")
    assert (run_dir / "metrics.jsonl").read_text() == "old\n"
    with claim_output(run_dir, force=True):
        assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "model.json").exists()


def test_one_writer_per_run_directory(capsys, tmp_path):
    out = tmp_path / "busy"
    with claim_output(out):
        err = _fails(capsys, ["train", "--model", PICO, "--epochs", "2", "--output", str(out)], "is in use")
        assert f"pid {os.getpid()}" in err


def test_non_finite_learning_rate_is_refused(capsys, tmp_path):
    _fails(capsys, ["train", "--model", PICO, "--lr", "inf", "--epochs", "2", "--output", str(tmp_path / "o")],
           "lr must be a positive float, got inf")


def test_bench_models_unknown_name_fails(capsys):
    _fails(capsys, ["bench", "models", "no_such_model", "--quick"], "unknown model 'no_such_model'")


def test_dataflow_empty_seq_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["dataflow", "--seq", ","])
    assert exc.value.code == 2 and "--seq needs at least one length" in capsys.readouterr().err


def test_missing_torchvision_data_says_how_to_get_it(capsys, tmp_path):
    missing = tmp_path / "missing"
    _fails(capsys, ["train", "--model", PICO, "--data", f"torchvision:CIFAR10:{missing}", "--epochs", "2",
                    "--output", str(tmp_path / "o")], f"CIFAR10 is not in {missing}", "download=True")


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch, tmp_path):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("attnreuse.train.loop.train", interrupted)
    _fails(capsys, ["train", "--model", PICO, "--epochs", "2", "--output", str(tmp_path / "o")], "interrupted", rc=130)
    assert not (tmp_path / "o").exists()


def test_weights_file_reads_like_every_other_file_of_a_run(tmp_path):
    path = save_model_weights(tmp_path / "model.safetensors", {"w": torch.zeros(2)})
    assert stat.S_IMODE(path.stat().st_mode) == new_file_mode()


def test_model_kwargs_take_timms_key_value_form():
    args = cli.build_parser().parse_args(
        ["train", "--model", PICO, "--output", "o", "--model-kwargs", "attn_plan=reuse", "depth=4", "drop_rate=0.1"]
    )
    assert args.model_kwargs == {"attn_plan": "reuse", "depth": 4, "drop_rate": 0.1}


def test_a_missing_extra_names_it(capsys, monkeypatch, tmp_path):
    def needs_onnx(config):
        raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")

    monkeypatch.setattr("attnreuse.train.loop.train", needs_onnx)
    _fails(capsys, ["train", "--model", PICO, "--epochs", "2", "--output", str(tmp_path / "o")],
           "pip install 'attnreuse[onnx]'")
