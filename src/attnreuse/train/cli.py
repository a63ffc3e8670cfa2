"""`attnreuse train` (also under `torchrun --nproc_per_node N`) and `attnreuse convert`."""

from __future__ import annotations

import argparse
import os

from attnreuse._cli_args import MergeKwargs, kwargs_item
from attnreuse._rundir import claim_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (digits, ImageFolder or torchvision data), optionally by distillation",
        description="Train any registered timm/attnreuse model. Run it under `torchrun --nproc_per_node N` "
        "for DistributedDataParallel; --batch-size is the global batch.",
    )
    p.add_argument("--model", help="registered model name (default with --init: the init run's model)")
    p.add_argument("--model-kwargs", type=kwargs_item, nargs="+", action=MergeKwargs, default={}, help="keyword arguments (key=value ... or one JSON object) for the model, "
                   "e.g. '{\"attn_plan\": \"reuse\"}'")
    p.add_argument("--data", default="digits", help="'digits' (default), an ImageFolder directory, or "
                   "'torchvision:NAME:ROOT'")
    p.add_argument("--output", required=True, help="run directory (checkpoints, config, metrics, summary)")
    p.add_argument("--init", help="start from the weights of a train/convert output directory")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=int, help="linear warm-up epochs (default: min(3, epochs - 1))")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--clip-grad", type=float, default=5.0, help="max gradient norm (0 disables clipping)")
    p.add_argument("--drop-path", type=float, default=0.0)
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--rand-augment", help="timm RandAugment string, e.g. rand-m9-n2")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    p.add_argument("--ema-decay", type=float, help="keep a ModelEmaV3 with this decay (e.g. 0.999)")
    p.add_argument("--teacher", help="teacher: a train output directory, or a model name with --teacher-checkpoint")
    p.add_argument("--teacher-checkpoint", help="teacher weights: .safetensors file or run directory")
    p.add_argument("--teacher-kwargs", type=kwargs_item, nargs="+", action=MergeKwargs, default={}, help="keyword arguments (key=value ... or one JSON object) for the teacher")
    p.add_argument("--distill", choices=("soft", "hard"), default="soft")
    p.add_argument("--distill-temperature", type=float, default=4.0)
    p.add_argument("--distill-weight", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train-batches", type=int, help="steps per epoch cap (smoke runs)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--threads", type=int, help="torch intra-op threads (1 avoids spin-waiting on a busy machine)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--force", action="store_true", help="replace a run already in --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

    c = sub.add_parser(
        "convert", help="retrofit a trained model to another attention plan (reuse/share/skip/taylor)",
        description="Carry every applicable weight over to the model with the new attn_plan, initialise "
        "new parts from calibration data, and save it like a train run (fine-tune it with "
        "`attnreuse train --init OUT --teacher ORIGINAL`).",
    )
    c.add_argument("--model", help="model name (default: the checkpoint run's model)")
    c.add_argument("--model-kwargs", type=kwargs_item, nargs="+", action=MergeKwargs, default={}, help="keyword arguments (key=value ... or one JSON object) of the source model")
    c.add_argument("--checkpoint", required=True, help="train output directory or .safetensors file")
    c.add_argument("--plan", required=True, help="target plan: mha, reuse, reuse:G (G maps), taylor (every layer); "
                   "mapshare:G (groups of G layers share a map), skipat (SkipAt's middle half), skipat:I,J,... "
                   "(layer indices); or a JSON list of per-layer entries")
    c.add_argument("--data", default="digits", help="calibration data (as for train)")
    c.add_argument("--calib-batches", type=int, default=4)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--fit-steps", type=int, default=500, help="Adam steps of each calibration regression")
    c.add_argument("--fit-lr", type=float, default=5e-3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--output", required=True)
    c.add_argument("--force", action="store_true", help="replace a run already in --output")
    c.set_defaults(func=run_convert)


def run(args: argparse.Namespace) -> int:
    from attnreuse.train.config import TrainConfig
    from attnreuse.train.loop import train

    model = args.model
    if model is None:
        if args.init is None:
            raise ValueError("--model is required unless --init names a train/convert output directory")
        from attnreuse.runs import MODEL_JSON, read_model_spec

        spec = read_model_spec(args.init)
        if spec is None:
            raise FileNotFoundError(f"--init {args.init} holds no {MODEL_JSON}")
        model = spec["name"]
    config = TrainConfig(
        model=model, output=args.output, data=args.data, model_kwargs=args.model_kwargs, init=args.init,
        img_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        warmup_epochs=min(3, args.epochs - 1) if args.warmup_epochs is None else args.warmup_epochs,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        clip_grad=args.clip_grad or None, drop_path=args.drop_path, rand_augment=args.rand_augment,
        mixup=args.mixup, cutmix=args.cutmix, ema_decay=args.ema_decay, teacher=args.teacher,
        teacher_checkpoint=args.teacher_checkpoint, teacher_kwargs=args.teacher_kwargs, distill=args.distill,
        distill_temperature=args.distill_temperature, distill_weight=args.distill_weight, seed=args.seed,
        limit_train_batches=args.limit_train_batches, num_workers=args.workers, threads=args.threads,
        progress=not args.no_progress,
        resume=args.resume,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes and holds the directory
        with claim_output(args.output, force=args.force, resume=args.resume):
            summary = train(config)
    else:
        summary = train(config)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        line = f"{summary['model']}: val top-1 {summary['val_top1']:.2f}%  test top-1 {summary['test_top1']:.2f}%"
        if "test_ema_top1" in summary:
            line += f"  (EMA test top-1 {summary['test_ema_top1']:.2f}%)"
        print(f"{line}  {summary['steps']} steps in {summary['time_s']:.1f} s -> {args.output}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from attnreuse.train.convert import ConvertConfig, convert

    config = ConvertConfig(
        checkpoint=args.checkpoint, plan=args.plan, output=args.output, model=args.model,
        model_kwargs=args.model_kwargs, data=args.data, calib_batches=args.calib_batches,
        batch_size=args.batch_size, fit_steps=args.fit_steps, fit_lr=args.fit_lr, seed=args.seed,
    )
    with claim_output(args.output, force=args.force):
        report = convert(config)
    print(f"converted {report['source']} -> plan {report['plan']}: {report['carried']} of "
          f"{report['target_tensors']} tensors carried over, {len(report['initialised'])} initialised -> {args.output}")
    return 0
