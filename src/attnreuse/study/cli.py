"""`attnreuse study`: every attention plan over several seeds, plus retrofits, on digits."""

from __future__ import annotations

import argparse

from attnreuse._cli_args import csv_list, int_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="accuracy of every plan over seeds (mean and spread against mha) and retrofit recovery",
        description="Train the digits rows (mha, reuse, share, skip and taylor pico ViTs and uniform_xs) on "
        "digits with one recipe for each seed, convert each mha run to share/skip plans and fine-tune them "
        "by distillation, and write OUTPUT/report.md and OUTPUT/study.json.",
    )
    p.add_argument("--output", default="runs/study")
    p.add_argument("--rows", type=csv_list, help="comma-separated subset of the rows (default: all)")
    p.add_argument("--seeds", type=int_list, default=(0, 1, 2), help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vit-img-size", type=int, default=16, help="input size of the pico ViT rows (default: 16)")
    p.add_argument("--retrofits", type=csv_list, default=("share", "skip"), help="share, skip, or both (default)")
    p.add_argument("--finetune-fraction", type=float, default=0.2, help="fine-tune budget as a fraction of training steps")
    p.add_argument("--finetune-lr", type=float, default=3e-3, help="fine-tune peak lr (1 warm-up epoch)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    p.add_argument("--threads-per-job", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="one short epoch per run: a smoke test of the pipeline")
    p.add_argument("--force", action="store_true", help="redo every run instead of reusing finished ones")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.study.config import StudyConfig
    from attnreuse.study.run import run_study

    kwargs = {"rows": args.rows} if args.rows else {}
    cfg = StudyConfig(
        output=args.output, seeds=args.seeds, epochs=args.epochs, lr=args.lr, vit_img_size=args.vit_img_size, retrofits=args.retrofits,
        finetune_fraction=args.finetune_fraction, finetune_lr=args.finetune_lr, jobs=args.jobs,
        threads_per_job=args.threads_per_job, quick=args.quick, force=args.force, **kwargs,
    )
    print(run_study(cfg).read_text())
    return 0
