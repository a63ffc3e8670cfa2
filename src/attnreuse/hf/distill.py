"""Distilling a converted encoder from its original on unlabeled text.

Loss per batch, on real tokens only: sum over layers of MSE(student hidden, teacher hidden)
(`hidden_weight`) + `embedding_weight` x (1 - cosine of mean-pooled last hidden states)
+ `relation_weight` x MSE between the student's and the teacher's matrices of cosines between
the batch's pooled embeddings (the neighbour structure retrieval depends on). The teacher is frozen; every student weight trains (AdamW, linear
warm-up then cosine decay). Dropout is off: the student learns the teacher's deterministic function.

Batches are drawn by a generator seeded with (seed, step), so a resumed run sees exactly the
batches the uninterrupted run would have; checkpoints hold the weights, optimizer, scheduler and
step, written atomically (`checkpoint.json` moves only after the new checkpoint is complete).
Under torchrun each of the world's processes takes its share of every batch (DDP, gloo on CPU);
only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnreuse._io import atomic_path, atomic_write_json, atomic_write_text
from attnreuse.hf.config import DistillConfig
from attnreuse.hf.fidelity import mean_pool, real_positions
from attnreuse.hf.hosts import input_stem, length_limit

__all__ = ["DistillConfig", "batch_texts", "distill_loss", "length_buckets", "read_run_json", "run_distillation"]


def length_buckets(texts: list[str], tokenizer, batch_size: int, max_length: int) -> list[list[str]]:
    """`texts` sorted by token count and cut into batches of `batch_size` neighbours, so a batch
    pads to nearly its own length (docstrings run from 8 to 400 tokens; a random batch pads to its
    longest and costs several times the real tokens)."""
    if hasattr(tokenizer, "frames"):  # waveforms (`attnreuse.hf.audio.WaveformBatcher`): frames per clip
        lengths = tokenizer.frames(texts, max_length)
    else:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    # by length, ties by text (clips, which do not compare, by their place in the corpus)
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], texts[i] if isinstance(texts[i], str) else i))
    ordered = [texts[i] for i in order]
    buckets = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    if len(buckets) > 1 and len(buckets[-1]) < batch_size:
        buckets.pop()  # every step trains on a full batch
    return buckets


def batch_texts(buckets: list[list[str]], cfg: DistillConfig, step: int) -> list[str]:
    """The texts of step `step`: a function of (seed, step) only, so a resumed run sees the same
    batches. Every pass over the buckets visits them in a fresh seeded order."""
    epoch, index = divmod(step, len(buckets))
    order = list(range(len(buckets)))
    random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
    return buckets[order[index]]


def distill_loss(student_out, teacher_out, mask: torch.Tensor, cfg: DistillConfig) -> tuple[torch.Tensor, dict]:
    """(loss, parts) of one batch; mask [B, N] marks real tokens."""
    m = mask.bool()
    hidden = sum(
        F.mse_loss(s[m], t[m]) for s, t in zip(student_out.hidden_states[1:], teacher_out.hidden_states[1:])
    )
    ps, pt = mean_pool(student_out.hidden_states[-1], mask), mean_pool(teacher_out.hidden_states[-1], mask)
    # clamped: a cosine of identical embeddings can round to just over 1 (a loss of -3e-07 was seen)
    emb = (1 - F.cosine_similarity(ps, pt, dim=-1)).clamp_min(0).mean()
    ns, nt = F.normalize(ps, dim=-1), F.normalize(pt, dim=-1)
    relation = F.mse_loss(ns @ ns.T, nt @ nt.T)  # who is near whom in the batch: what retrieval sees
    loss = cfg.hidden_weight * hidden + cfg.embedding_weight * emb + cfg.relation_weight * relation
    return loss, {"hidden_mse": float(hidden.detach()), "embedding_cos_loss": float(emb.detach()),
                  "relation_mse": float(relation.detach())}


def _lr_at(cfg: DistillConfig, step: int) -> float:
    warmup = cfg.warmup
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def read_run_json(path: Path) -> dict:
    """A JSON object of a run directory (config.json, job.json, checkpoint.json), or a ValueError
    naming the file (a bare JSON error named none)."""
    try:
        value = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"--resume: {path} is not readable JSON ({err}); start the run again with --force") from None
    if not isinstance(value, dict):
        raise ValueError(f"--resume: {path} holds no JSON object; start the run again with --force")
    return value


def _save_checkpoint(run_dir: Path, step: int, student: nn.Module, opt, sched) -> None:
    from safetensors.torch import save_file

    rel = Path("checkpoints") / f"step_{step:06d}"
    ckpt = run_dir / rel
    ckpt.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt / "model.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}, str(tmp))
    with atomic_path(ckpt / "state.pt") as tmp:
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)
    atomic_write_json(run_dir / "checkpoint.json", {"step": step, "path": rel.as_posix()})
    for old in (run_dir / "checkpoints").iterdir():
        if old.name != rel.name:
            import shutil

            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(run_dir: Path, student: nn.Module, opt, sched) -> int:
    """Restore the latest checkpoint into student/opt/sched; returns the step to continue from."""
    from safetensors.torch import load_file

    pointer = run_dir / "checkpoint.json"
    if not pointer.is_file():
        raise FileNotFoundError(f"--resume: {run_dir} has no checkpoint.json (no checkpoint was completed); "
                                "start the run again with --force instead of --resume")
    ckpt = run_dir / str(read_run_json(pointer).get("path"))
    try:
        student.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"--resume: checkpoint {ckpt} is unreadable ({str(err).splitlines()[0]})") from None
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["step"])


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the lines of `path` (metrics.jsonl) up to step `step`, the checkpoint a run resumes
    from: the steps after it, logged before the interruption, run again and are logged anew (and
    a line the interruption cut short is dropped)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(kept))


def run_distillation(student: nn.Module, teacher: nn.Module, tokenizer, texts: list[str], cfg: DistillConfig,
                     run_dir: Path, *, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Train `student` towards `teacher` for cfg.steps; checkpoints and metrics.jsonl in run_dir.

    Returns {"steps", "seconds", "final_loss"}; the student is left in eval mode at its final weights.
    """
    from timm.utils.distributed import init_distributed_device_so

    dist_info = init_distributed_device_so(device="cuda" if torch.cuda.is_available() else "cpu")
    rank, world = dist_info["global_rank"], dist_info["world_size"]
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {world} torchrun processes")
    teacher.eval().requires_grad_(False)
    student.eval()  # dropout off; gradients still flow
    # The input stem sees the same input as the teacher's and starts equal to it: it stays frozen
    # (a text model's 30k-row embedding table would dominate every optimizer step; a speech model's
    # conv feature encoder is frozen in fine-tuning as a rule, `freeze_feature_encoder`).
    input_stem(student).requires_grad_(False)
    max_length = length_limit(teacher.config, cfg.max_length)  # --max-length, at most the model's positions
    buckets = length_buckets(texts, tokenizer, cfg.batch_size, max_length)
    model = student
    if world > 1:
        model = nn.parallel.DistributedDataParallel(student)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_at(cfg, s))
    start = _load_checkpoint(run_dir, student, opt, sched) if resume else 0
    if start >= cfg.steps:
        log(f"the checkpoint in {run_dir} is at step {start} of {cfg.steps}: nothing to do")
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        # disable=None: a bar on a terminal only, not carriage-return lines in a redirected log
        bar = tqdm(total=cfg.steps, initial=start, desc="distil", unit="step", disable=None)
    t0, loss = time.perf_counter(), float("nan")
    metrics = run_dir / "metrics.jsonl"
    if resume and rank == 0:
        _trim_metrics(metrics, start)
    for step in range(start, cfg.steps):
        chunk = batch_texts(buckets, cfg, step)
        share = len(chunk) // world
        batch = tokenizer(chunk[rank * share : (rank + 1) * share], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            t_out = teacher(**batch, output_hidden_states=True)
        s_out = model(**batch, output_hidden_states=True)
        loss_t, parts = distill_loss(s_out, t_out, real_positions(student, batch, s_out.hidden_states[-1].shape[1]), cfg)
        if not torch.isfinite(loss_t):
            raise FloatingPointError(f"distillation loss became {float(loss_t)} at step {step}; lower --lr (got {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        opt.step()
        sched.step()
        loss = float(loss_t.detach())
        if rank == 0:
            with open(metrics, "a") as fh:
                fh.write(json.dumps({"step": step + 1, "loss": loss, "lr": sched.get_last_lr()[0], **parts}) + "\n")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                _save_checkpoint(run_dir, step + 1, student, opt, sched)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
    if bar is not None:
        bar.close()
    student.eval()
    return {"steps": cfg.steps, "start_step": start, "seconds": time.perf_counter() - t0, "final_loss": loss,
            "config": asdict(cfg)}
