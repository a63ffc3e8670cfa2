"""Distillation's learning-rate warm-up: by default a tenth of the run (at most 50 steps), so a short
run reaches its peak rate and decays; a warm-up as long as the run is refused in one line."""

from __future__ import annotations

import pytest

from attnreuse.cli import main
from attnreuse.hf.config import DistillConfig
from attnreuse.hf.distill import _lr_at


@pytest.mark.parametrize("steps, warmup", [(20, 2), (5, 0), (900, 50), (499, 49)])
def test_default_warmup_is_a_tenth_of_the_run_at_most_50(steps, warmup):
    cfg = DistillConfig(steps=steps)
    assert cfg.warmup == warmup
    rates = [_lr_at(cfg, s) for s in range(steps)]
    assert max(rates) == pytest.approx(1.0)  # the peak rate is reached ...
    assert rates[-1] < 0.1 and rates.index(max(rates)) == max(warmup - 1, 0)  # ... at the warm-up's end, then decays


def test_a_given_warmup_is_kept():
    assert DistillConfig(steps=20, warmup_steps=7).warmup == 7
    assert DistillConfig(steps=20, warmup_steps=0).warmup == 0


@pytest.mark.parametrize("value", [20, 30, -1, 2.5, True])
def test_a_warmup_as_long_as_the_run_is_refused(value):
    with pytest.raises(ValueError, match="--warmup-steps must be an int from 0 to --steps - 1 = 19"):
        DistillConfig(steps=20, warmup_steps=value)


def test_distill_cli_names_the_warmup_flag(tmp_path, capsys, model_dir):
    capsys.readouterr()  # what the fixture printed
    code = main(["hf", "distill", "--teacher", str(model_dir), "--init", str(model_dir), "--output", str(tmp_path / "r"),
                 "--steps", "20", "--warmup-steps", "50"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--warmup-steps" in err and "got 50" in err
    assert not (tmp_path / "r").exists()


def test_distill_loss_of_a_student_equal_to_its_teacher_is_zero_not_negative():
    """1 - cos(x, x) rounds to about +-1e-7; the embedding term is clamped at 0, so the loss of a
    perfect student is never below 0 (the CLI and the demo print it), and every part is 0 or more."""
    from types import SimpleNamespace

    import torch

    from attnreuse.hf.distill import distill_loss

    cfg = DistillConfig(relation_weight=1.0)  # every term on
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        hidden = [torch.randn(4, 9, 24, generator=g) * 10 for _ in range(3)]
        out = SimpleNamespace(hidden_states=hidden)
        mask = torch.ones(4, 9, dtype=torch.long)
        mask[1, 6:] = 0
        loss, parts = distill_loss(out, out, mask, cfg)
        assert 0.0 <= loss.item() < 1e-4 and all(v >= 0.0 for v in parts.values())
    other = SimpleNamespace(hidden_states=[h + 1 for h in hidden])
    loss, parts = distill_loss(other, out, mask, cfg)
    assert loss.item() > 0 and parts["hidden_mse"] > 0
