"""The training loop of `attnreuse train`: single process or DistributedDataParallel under torchrun.

Recipe through timm's factories: AdamW (`create_optimizer_v2`), warm-up + cosine stepped every
update (`create_scheduler_v2`), label smoothing, optional RandAugment / mixup-cutmix (`Mixup`),
drop-path, gradient-norm clipping, optional EMA (`ModelEmaV3`), optional distillation.

Determinism: the run is seeded once; the sample order comes from a DistributedSampler seeded with
(seed, epoch); a checkpoint at the end of each epoch stores model, optimizer, scheduler, EMA and the
RNG states of every rank, so `resume` replays the remaining epochs exactly.
Under torchrun (WORLD_SIZE > 1) the process group uses nccl on GPU and gloo on CPU; the global
batch is split over the ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import random_seed
from timm.utils.distributed import init_distributed_device_so
from torch import nn

from attnreuse._io import atomic_write_json, atomic_write_text
from attnreuse.models import create_model
from attnreuse import runs as ckpt_io
from attnreuse.train.config import TrainConfig
from attnreuse.data import build_transform, make_eval_loader, make_train_loader, open_data

__all__ = ["evaluate", "train"]

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    """This process's rank, the world size and its device: timm's `init_distributed_device_so`
    (torchrun's environment; nccl on CUDA, gloo on CPU), kept when the group already exists."""
    if dist.is_available() and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        return _Dist(dist.get_rank(), dist.get_world_size(), device)
    info = init_distributed_device_so(device="cuda" if torch.cuda.is_available() else "cpu")
    return _Dist(info["global_rank"], info["world_size"], torch.device(info["device"]))


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(obj, d: _Dist) -> list:
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _model_spec(config: TrainConfig, num_classes: int) -> dict:
    """{"name", "kwargs"} to build the student (from `init`'s model.json when given)."""
    if config.init is not None:
        spec = ckpt_io.read_model_spec(config.init)
        if spec is None:
            raise FileNotFoundError(f"init {config.init} is not a train/convert output directory (no model.json)")
        if spec["name"] != config.model:
            raise ValueError(f"model {config.model!r} differs from the init checkpoint's model {spec['name']!r}")
        kwargs = {**spec["kwargs"], **config.model_kwargs}
    else:
        kwargs = {**config.model_kwargs}
        if config.img_size is not None:
            kwargs.setdefault("img_size", config.img_size)
    kwargs["num_classes"] = num_classes
    if config.drop_path > 0:
        kwargs["drop_path_rate"] = config.drop_path
    return {"name": config.model, "kwargs": kwargs}


def _build_model(spec: dict) -> tuple[nn.Module, dict]:
    """Create the model; a model that takes no `img_size` (a conv net) is built without it."""
    try:
        return create_model(spec["name"], **spec["kwargs"]), spec
    except TypeError as err:
        if "img_size" not in spec["kwargs"] or "img_size" not in str(err):
            raise
    kwargs = {k: v for k, v in spec["kwargs"].items() if k != "img_size"}
    return create_model(spec["name"], **kwargs), {"name": spec["name"], "kwargs": kwargs}


def _input_size(model: nn.Module, config: TrainConfig, spec: dict) -> int:
    if config.img_size is not None:
        return config.img_size
    if "img_size" in spec["kwargs"]:
        size = spec["kwargs"]["img_size"]
        return int(size if isinstance(size, int) else size[-1])
    return int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def evaluate(model: nn.Module, loader, device: torch.device, d: _Dist | None = None) -> float:
    """Top-1 accuracy in percent over the loader (summed over ranks when distributed)."""
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            counts[0] += (model(x).argmax(-1) == y).sum()
            counts[1] += y.numel()
    model.train(was_training)
    if d is not None and d.world > 1:
        dist.all_reduce(counts)
    return float(100.0 * counts[0] / counts[1].clamp(min=1))


def _objective(config: TrainConfig, num_classes: int, device: torch.device):
    """(timm Mixup or None, loss(x, logits, target)): label-smoothed CE, or soft-target CE on the
    already smoothed, mixed targets of mixup; wrapped in distillation when there is a teacher."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    mixup = None
    base: nn.Module = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    if config.mixup > 0 or config.cutmix > 0:
        mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix,
                      label_smoothing=config.label_smoothing, num_classes=num_classes)
        base = SoftTargetCrossEntropy()
    if config.teacher is None:
        return mixup, lambda x, logits, target: base(logits, target)
    from attnreuse.train.distill import DistillLoss, load_teacher

    teacher = load_teacher(config.teacher, config.teacher_checkpoint, config.teacher_kwargs).to(device)
    return mixup, DistillLoss(base, teacher, config.distill, config.distill_temperature, config.distill_weight)


def _train_epoch(net, model, loader, steps: int, opt, sched, ema, mixup, criterion, config, d: _Dist,
                 epoch: int, step: int, total_steps: int, scheduled: list[nn.Module]) -> tuple[list[dict], float, int]:
    """One epoch of at most `steps` updates; returns (step records, mean loss, global step).

    `scheduled`: modules with a training schedule of their own (`set_progress`, e.g. the Taylor
    layer's annealed sparse branch), told step / total_steps before every update: a function of
    the global step, so a resumed run sees the same values."""
    from tqdm import tqdm

    net.train()
    records, loss_sum = [], 0.0
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=None if config.progress and d.main else True)  # None: on a terminal only
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        x, y = x.to(d.device), y.to(d.device)
        for m in scheduled:
            m.set_progress(step / total_steps)
        if mixup is not None:
            x, y = mixup(x, y)
        loss = criterion(x, net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        opt.step()
        step += 1
        sched.step_update(num_updates=step)
        if ema is not None:
            ema.update(model, step=step)
        loss_val = loss.detach()
        if d.world > 1:
            dist.all_reduce(loss_val)  # log the global-batch loss on every rank
            loss_val /= d.world
        loss_f = float(loss_val)
        if not math.isfinite(loss_f):
            raise FloatingPointError(f"loss became {loss_f} at epoch {epoch}, step {step}; lower --lr")
        loss_sum += loss_f
        if step % config.log_every_steps == 0:
            records.append({"kind": "step", "epoch": epoch, "step": step, "loss": loss_f,
                            "lr": opt.param_groups[0]["lr"]})
        bar.set_postfix(loss=f"{loss_f:.4f}")
        bar.update()
    bar.close()
    return records, loss_sum / steps, step


def _append_metrics(path: Path, records: list[dict]) -> None:
    with open(path, "a") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def _truncate_metrics(path: Path, before_epoch: int) -> None:
    """Drop records of epochs >= before_epoch (written by a run killed mid-epoch) before resuming,
    and a last line cut short by a kill mid-write (the file is appended to, not replaced)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line]
    keep = []
    for i, line in enumerate(lines):
        try:
            epoch = json.loads(line)["epoch"]
        except (json.JSONDecodeError, TypeError, KeyError):
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path} line {i + 1} is not a metrics record; the run's metrics are damaged") from None
        if epoch < before_epoch:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _prepare_output(config: TrainConfig, out: Path) -> Path | None:
    """Check `out` against `resume`; return the checkpoint to resume from (None: fresh run)."""
    latest = ckpt_io.latest_checkpoint(out) if out.is_dir() else None
    if not config.resume:
        if latest is not None:
            raise ValueError(f"output {out} already holds a run (checkpoint {latest}); pass --resume or a new --output")
        return None
    if latest is None:
        if not (out / "config.json").is_file():
            # nothing was ever started here (a mistyped --output, most likely): starting from scratch
            # would look like a resumed run; a run killed before its first checkpoint has config.json
            raise ValueError(f"--resume: output {out} holds no run to continue (no config.json or checkpoint); "
                             "check --output, or drop --resume to start a new run")
        return None
    saved = TrainConfig.load(out / "config.json")
    diff = config.resume_mismatch(saved)
    if diff:
        raise ValueError(f"cannot resume {out}: the config differs from the saved run in {diff}")
    return latest


def train(config: TrainConfig) -> dict:
    """Run (or resume) the training `config` describes; returns the summary (also in summary.json)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    d = _init_distributed()
    out = Path(config.output)
    resume_from = _prepare_output(config, out)
    t_start = time.perf_counter()

    random_seed(config.seed)
    splits = open_data(config.data)
    spec = _model_spec(config, splits.num_classes)
    model, spec = _build_model(spec)
    if config.init is not None and resume_from is None:
        ckpt_io.load_into(model, ckpt_io.load_weights(config.init), config.init)
    model.to(d.device)
    size = _input_size(model, config, spec)
    mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
    data = splits.transformed(
        build_transform(size, mean, std, train=True, rand_augment=config.rand_augment),
        build_transform(size, mean, std, train=False),
    )
    # Randomness after this point (augmentation, drop-path) differs per rank; rank 0 matches a
    # single-process run.
    random_seed(config.seed, d.rank)

    loader, sampler = make_train_loader(
        data.train, config.batch_size, rank=d.rank, world=d.world, seed=config.seed, num_workers=config.num_workers
    )
    val_loader = make_eval_loader(data.val, 2 * config.batch_size, rank=d.rank, world=d.world)
    test_loader = make_eval_loader(data.test, 2 * config.batch_size, rank=d.rank, world=d.world)
    steps_per_epoch = len(loader) if config.limit_train_batches is None else min(len(loader), config.limit_train_batches)

    optimizer = create_optimizer_v2(model, opt="adamw", lr=config.lr, weight_decay=config.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        warmup_lr=config.warmup_lr, min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay is not None else None
    mixup, criterion = _objective(config, splits.num_classes, d.device)

    start_epoch, step = 0, 0
    if resume_from is not None:
        state = ckpt_io.load_state(resume_from)
        ckpt_io.load_into(model, ckpt_io.load_weights(resume_from), resume_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ckpt_io.load_into(ema.module, ckpt_io.load_weights(resume_from, ema=True), resume_from)
        start_epoch, step = state["epoch"] + 1, state["step"]
        _set_rng_state(state["rng"][d.rank])

    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    metrics_path = out / METRICS
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            metrics_path.unlink(missing_ok=True)
        else:
            _truncate_metrics(metrics_path, start_epoch)
        atomic_write_json(out / "config.json", config.to_dict())
        ckpt_io.write_model_spec(out, spec)

    scheduled = [m for m in model.modules() if hasattr(m, "set_progress")]
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        t_epoch = time.perf_counter()
        records, train_loss, step = _train_epoch(
            net, model, loader, steps_per_epoch, optimizer, scheduler, ema, mixup, criterion, config, d, epoch, step,
            steps_per_epoch * config.epochs, scheduled,
        )
        val_top1 = evaluate(model, val_loader, d.device, d)
        epoch_rec = {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": train_loss,
                     "val_top1": val_top1, "epoch_s": time.perf_counter() - t_epoch}
        if ema is not None:
            epoch_rec["val_ema_top1"] = evaluate(ema.module, val_loader, d.device, d)
        records.append(epoch_rec)
        rng_all = _gather(_rng_state(), d)
        if d.main:
            _append_metrics(metrics_path, records)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "epoch": epoch, "step": step, "rng": rng_all}
            ckpt_io.save_checkpoint(out, epoch, model.state_dict(),
                                    ema.module.state_dict() if ema is not None else None, state)
        if d.world > 1:
            dist.barrier()

    summary = {
        "model": spec["name"], "data": splits.description, "epochs": config.epochs, "steps": step,
        "world_size": d.world, "val_top1": evaluate(model, val_loader, d.device, d),
        "test_top1": evaluate(model, test_loader, d.device, d),
        "params": sum(p.numel() for p in model.parameters()),
    }
    if ema is not None:
        summary["val_ema_top1"] = evaluate(ema.module, val_loader, d.device, d)
        summary["test_ema_top1"] = evaluate(ema.module, test_loader, d.device, d)
    summary["time_s"] = time.perf_counter() - t_start
    if d.main:
        atomic_write_json(out / SUMMARY, summary)
    if d.world > 1:
        dist.barrier()
    return summary
