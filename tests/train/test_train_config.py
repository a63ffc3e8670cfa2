import json

import pytest

from attnreuse.train.config import TrainConfig


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs must be a positive int, got 0"),
        ("batch_size", 2.5, "batch_size must be a positive int"),
        ("lr", -1.0, "lr must be a positive float"),
        ("warmup_epochs", 5, "warmup_epochs must be smaller than epochs"),
        ("label_smoothing", 1.0, "label_smoothing must be a number in [0, 1)"),
        ("distill", "feature", "distill must be one of"),
        ("ema_decay", 1.5, "ema_decay must be a float in (0, 1)"),
        ("rand_augment", "m9", "rand_augment must be a timm RandAugment string"),
        ("seed", -1, "seed must be a non-negative int"),
        ("threads", 0, "threads must be a positive int, got 0"),
        ("teacher_checkpoint", "x.safetensors", "teacher_checkpoint needs teacher"),
    ],
)
def test_config_rejects_bad_values(tmp_path, make_config, field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make_config(tmp_path, **{field: value})


def test_config_round_trips_through_json(tmp_path, make_config):
    cfg = make_config(tmp_path, ema_decay=0.99, teacher="runs/teacher")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.load(path) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**cfg.to_dict(), "optimiser": "sgd"})


def test_resume_mismatch_ignores_only_free_fields(tmp_path, make_config):
    cfg = make_config(tmp_path)
    assert cfg.resume_mismatch(make_config(tmp_path / "other", resume=True, progress=True)) == []
    assert cfg.resume_mismatch(make_config(tmp_path, lr=2e-3)) == ["lr"]
