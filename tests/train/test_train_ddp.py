"""Two torchrun processes (gloo, CPU) agree with one process on the same global batch."""

import json
import os
import subprocess
import sys

import torch

from attnreuse import runs as ckpt_io
from attnreuse.train.loop import train


def _losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "step"]


def test_two_processes_match_one(tmp_path, make_config):
    # drop-path 0 and no augmentation: the ranks' randomness would differ from one process's.
    single = make_config(tmp_path / "single", epochs=2, limit_train_batches=2, clip_grad=1.0)
    train(single)
    cfg = single.to_dict()
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "attnreuse.cli", "train", "--model", cfg["model"], "--model-kwargs", json.dumps(cfg["model_kwargs"]),
        "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--clip-grad", "1.0",
        "--limit-train-batches", "2", "--no-progress", "--output", str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test top-1") == 1  # only rank 0 reports
    a, b = ckpt_io.load_weights(tmp_path / "single"), ckpt_io.load_weights(tmp_path / "ddp")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # The averaged loss each process logs is the one-process loss of the same global batch.
    la, lb = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(la) == len(lb) == 4 and len(set(la)) == 4
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-5, atol=1e-5)
