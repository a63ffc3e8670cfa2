"""`attnreuse train` (also under `torchrun --nproc_per_node N`) and `attnreuse convert`."""

from __future__ import annotations

import argparse
import os

from attnreuse._cli_args import add_config_args, config_from_args
from attnreuse._rundir import claim_output
from attnreuse.train.config import ConvertConfig, TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (digits, ImageFolder or torchvision data), optionally by distillation",
        description="Train any registered timm/attnreuse model. Run it under `torchrun --nproc_per_node N` "
        "for DistributedDataParallel; --batch-size is the global batch.",
    )
    add_config_args(p, TrainConfig)
    p.add_argument("--force", action="store_true", help="replace a run already in --output")
    p.set_defaults(func=run)

    c = sub.add_parser(
        "convert", help="retrofit a trained model to another attention plan (reuse/share/skip/taylor)",
        description="Carry every applicable weight over to the model with the new attn_plan, initialise "
        "new parts from calibration data, and save it like a train run (fine-tune it with "
        "`attnreuse train --init OUT --teacher ORIGINAL`).",
    )
    add_config_args(c, ConvertConfig)
    c.add_argument("--force", action="store_true", help="replace a run already in --output")
    c.set_defaults(func=run_convert)


def run(args: argparse.Namespace) -> int:
    from attnreuse.train.loop import train

    model = getattr(args, "model", None)
    if model is None and args.config is None:
        if getattr(args, "init", None) is None:
            raise ValueError("--model is required unless --init names a train/convert output directory")
        from attnreuse.runs import MODEL_JSON, read_model_spec

        if not os.path.isdir(args.init):
            what = "is a file" if os.path.exists(args.init) else "no such directory"
            raise FileNotFoundError(f"--init {args.init}: {what}; give a train/convert output directory")
        spec = read_model_spec(args.init)
        if spec is None:
            raise FileNotFoundError(f"--init {args.init} holds no {MODEL_JSON}")
        model = spec["name"]
    fixed = {"model": model} if model is not None else {}
    config = config_from_args(TrainConfig, args, **fixed)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes and holds the directory
        reads = (("--init", config.init), ("--teacher", config.teacher),
                 ("--teacher-checkpoint", config.teacher_checkpoint), ("--data", config.data))
        with claim_output(config.output, force=args.force, resume=config.resume, reads=reads):
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
        print(f"{line}  {summary['steps']} steps in {summary['time_s']:.1f} s -> {config.output}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from attnreuse.train.convert import convert

    config = config_from_args(ConvertConfig, args)
    reads = (("--checkpoint", config.checkpoint), ("--data", config.data))
    with claim_output(config.output, force=args.force, reads=reads):
        report = convert(config)
    print(f"converted {report['source']} -> plan {report['plan']}: {report['carried']} of "
          f"{report['target_tensors']} tensors carried over, {len(report['initialised'])} initialised -> {config.output}")
    return 0
