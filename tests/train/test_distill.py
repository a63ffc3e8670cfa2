import json

import pytest
import torch
import torch.nn.functional as F

from attnreuse.cli import main
from attnreuse.train.distill import distill_term, load_teacher
from attnreuse.train.loop import train


def test_soft_term_is_scaled_kl_and_zero_for_equal_logits():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    T = 3.0
    p_t = F.softmax(t / T, -1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    torch.testing.assert_close(distill_term(s, t, "soft", T), expected)
    assert distill_term(t, t, "soft", T).abs() < 1e-6


def test_hard_term_is_cross_entropy_with_teacher_argmax():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(distill_term(s, t, "hard", 1.0), F.cross_entropy(s, t.argmax(-1)))
    with pytest.raises(ValueError, match="one shape"):
        distill_term(s, t[:, :5], "hard", 1.0)


def test_train_with_a_teacher_directory_and_init(tmp_path, make_config):
    train(make_config(tmp_path / "teacher", epochs=2, limit_train_batches=2))
    teacher = load_teacher(str(tmp_path / "teacher"), None, {})
    assert not any(p.requires_grad for p in teacher.parameters())
    for kind in ("soft", "hard"):
        out = tmp_path / f"student_{kind}"
        summary = train(make_config(out, epochs=2, limit_train_batches=2, teacher=str(tmp_path / "teacher"),
                                    distill=kind, init=str(tmp_path / "teacher")))
        assert summary["steps"] == 4
    first = json.loads((tmp_path / "student_soft" / "metrics.jsonl").read_text().splitlines()[0])
    base = json.loads((tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] != base["loss"]  # distillation term and the init weights change the loss


def test_teacher_name_without_weights_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--teacher-checkpoint"):
        load_teacher("vit_tiny_patch16_224", None, {})


def test_cli_train_reports_and_rejects_bad_flags(tmp_path, capsys):
    args = ["train", "--model", "vit_tiny_patch16_224", "--model-kwargs",
            '{"img_size": 16, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}',
            "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "1",
            "--output", str(tmp_path / "run")]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "test top-1" in printed.out
    assert "epoch 1/2" not in printed.err  # progress bars on a terminal only, not in a redirected log
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warmup_epochs"] == 1  # min(3, epochs - 1)
    assert main(args[:-2] + ["--output", str(tmp_path / "bad"), "--lr", "-1"]) == 2
    assert "lr must be a positive float, got -1.0" in capsys.readouterr().err
    assert main(["train", "--output", str(tmp_path / "x")]) == 2
    assert "--model is required" in capsys.readouterr().err
