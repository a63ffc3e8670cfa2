"""`attnreuse demo`: the main job on the built-in digits data."""

from __future__ import annotations

import argparse

from attnreuse._cli_args import csv_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train every attention plan on digits, measure accuracy/latency/memory, write a report",
        description="Train a small ViT with the mha, reuse, share, skip and taylor plans and uniform_xs "
        "on the built-in digits data, measure latency and memory (eager and ONNX Runtime), sweep the "
        "operators and write OUTPUT/report.md with plots. A second run reuses finished stages.",
    )
    p.add_argument("--output", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs per model (default: 20)")
    p.add_argument("--threads", type=int, default=2, help="threads for every timing (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", type=csv_list, help="comma-separated subset of the demo's rows (default: all)")
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run of the same pipeline")
    p.add_argument("--force", action="store_true", help="redo every stage instead of reusing results")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.demo.config import DemoConfig
    from attnreuse.demo.run import run_demo

    kwargs = {}
    if args.models:
        kwargs["models"] = args.models
    if args.quick:
        kwargs["op_tokens"] = (64, 196)
    cfg = DemoConfig(
        output=args.output,
        epochs=args.epochs,
        threads=args.threads,
        seed=args.seed,
        quick=args.quick,
        force=args.force,
        progress=not args.no_progress,
        **kwargs,
    )
    report = run_demo(cfg)
    print(report)
    return 0
