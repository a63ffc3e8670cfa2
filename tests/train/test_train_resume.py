import json

import pytest
import torch

from attnreuse import runs as ckpt_io
from attnreuse.train.loop import train


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if json.loads(line)["kind"] == "step"]


def test_resume_replays_the_uninterrupted_run(tmp_path, make_config, monkeypatch):
    # Augmentation, EMA and drop-path all draw randomness, so RNG restoring is exercised.
    extra = dict(rand_augment="rand-m5-n1", ema_decay=0.9, drop_path=0.1, mixup=0.4)
    straight = train(make_config(tmp_path / "straight", **extra))

    real_save = ckpt_io.save_checkpoint

    def save_then_die(run_dir, epoch, *args):
        real_save(run_dir, epoch, *args)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(ckpt_io, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(tmp_path / "killed", **extra))
    monkeypatch.setattr(ckpt_io, "save_checkpoint", real_save)
    assert len(_losses(tmp_path / "killed")) == 3
    resumed = train(make_config(tmp_path / "killed", resume=True, **extra))

    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "killed")
    assert len(a) == len(b) == 6
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=0, atol=1e-6)
    assert resumed["val_top1"] == straight["val_top1"]
    wa = ckpt_io.load_weights(tmp_path / "straight")
    wb = ckpt_io.load_weights(tmp_path / "killed")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)


def test_fresh_run_refuses_existing_output_and_resume_checks_config(tmp_path, make_config):
    train(make_config(tmp_path, epochs=2, limit_train_batches=1))
    with pytest.raises(ValueError, match="already holds a run"):
        train(make_config(tmp_path, epochs=2, limit_train_batches=1))
    with pytest.raises(ValueError, match=r"config differs from the saved run in \['lr'\]"):
        train(make_config(tmp_path, epochs=2, limit_train_batches=1, lr=5e-3, resume=True))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= {"val_top1", "test_top1", "time_s", "steps"} and summary["steps"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 1e-3


def test_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model_sd = {"w": torch.ones(3)}
    state = {"epoch": 0, "step": 1}
    ckpt_io.save_checkpoint(tmp_path, 0, model_sd, None, state)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_io.save_checkpoint(tmp_path, 1, {"w": torch.zeros(3)}, None, {"epoch": 1, "step": 2})
    assert ckpt_io.latest_checkpoint(tmp_path).name == "epoch_0000"
    assert torch.equal(ckpt_io.load_weights(tmp_path)["w"], torch.ones(3))
    assert ckpt_io.load_state(ckpt_io.latest_checkpoint(tmp_path))["step"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_layers_with_a_schedule_see_training_progress_by_global_step(tmp_path, make_config, monkeypatch):
    """The Taylor layer's annealed sparse branch follows step / total steps, also across a resume."""
    from attnreuse.layers import TaylorAttention

    seen = []
    real_progress = TaylorAttention.set_progress
    monkeypatch.setattr(TaylorAttention, "set_progress", lambda self, f: (seen.append(f), real_progress(self, f)))
    kwargs = {**make_config(tmp_path / "unused").model_kwargs, "attn_plan": "taylor"}
    cfg = dict(model="vit_attnreuse_tiny_patch16_224", model_kwargs=kwargs)  # 1 block, 3 steps an epoch
    train(make_config(tmp_path / "straight", **cfg))
    assert seen == [i / 6 for i in range(6)]

    seen.clear()
    real_save = ckpt_io.save_checkpoint

    def save_then_die(run_dir, epoch, *args):
        real_save(run_dir, epoch, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_io, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(tmp_path / "killed", **cfg))
    monkeypatch.setattr(ckpt_io, "save_checkpoint", real_save)
    train(make_config(tmp_path / "killed", resume=True, **cfg))
    assert seen == [i / 6 for i in range(6)]
