"""A transformers model directory is no run directory: `--force` removes a run's files, config.json
among them, and left a model directory named as --output by mistake with its weights and no
config.json (bench study then wrote its own config.json in the model's place)."""

from __future__ import annotations

import pytest

from attnreuse._rundir import RunDirError, claim_output
from cliutil import fails


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "some-model"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "model.safetensors").write_bytes(b"weights")
    return directory


@pytest.mark.parametrize("force, resume", [(True, False), (False, False), (False, True)])
def test_claim_output_refuses_a_model_directory(model_dir, force, resume):
    with pytest.raises(RunDirError, match="is a transformers model directory \\(its config.json names a model_type\\), not a run"):
        with claim_output(model_dir, force=force, resume=resume):
            pass
    assert (model_dir / "config.json").read_text() == '{"model_type": "bert"}'


def test_bench_study_force_keeps_a_model_directory(capsys, model_dir):
    fails(capsys, ["bench", "study", "--model", "whisper-tiny", "--lengths", "8", "--output", str(model_dir), "--force"],
          f"--output {model_dir} is a transformers model directory")
    assert (model_dir / "config.json").read_text() == '{"model_type": "bert"}'
