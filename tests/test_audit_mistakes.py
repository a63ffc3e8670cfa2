"""User mistakes found by the audit of train, convert, analyze and export (2026-12-01): each ends in
one line naming the argument or file, a non-zero exit, and no run or input lost."""

import json

import pytest
from cliutil import fails

from attnreuse.models import create_model
from attnreuse.runs import save_model_weights

PICO = "vit_attnreuse_pico_patch4_32"


@pytest.fixture
def pico_dir(tmp_path):
    """A train-style run directory of a 1-layer pico ViT (model.json + model.safetensors)."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"name": PICO, "kwargs": {"depth": 1}}))
    save_model_weights(d / "model.safetensors", create_model(PICO, depth=1).state_dict())
    return d


def _files(d):
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("argv, flag", [
    (["convert", "--checkpoint", "{run}", "--plan", "reuse"], "--checkpoint"),
    (["analyze", "--checkpoint", "{run}"], "--checkpoint"),
    (["train", "--init", "{run}", "--epochs", "1"], "--init"),
])
def test_a_run_is_not_written_over_its_own_input(capsys, pico_dir, argv, flag):
    # `convert --checkpoint R --output R --force` deleted R's model.json and weights before reading them
    before = _files(pico_dir)
    argv = [a.replace("{run}", str(pico_dir)) for a in argv]
    fails(capsys, [*argv, "--output", str(pico_dir), "--force"], f"--output {pico_dir} is or holds the {flag}")
    assert _files(pico_dir) == before


def test_an_input_inside_the_runs_checkpoints_is_kept(capsys, tmp_path, pico_dir):
    out = tmp_path / "out"
    weights = out / "checkpoints" / "epoch_0001" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes((pico_dir / "model.safetensors").read_bytes())
    argv = ["analyze", "--model", PICO, "--model-kwargs", "depth=1", "--checkpoint", str(weights)]
    fails(capsys, [*argv, "--output", str(out), "--force"], "is or holds the --checkpoint")
    assert weights.is_file()


def test_resume_and_force_contradict(capsys, pico_dir):
    # `train --resume --force` resumed and ignored --force, exit 0
    fails(capsys, ["train", "--model", PICO, "--output", str(pico_dir), "--resume", "--force"],
          "--resume continues the run", "--force replaces it; give one of them")
