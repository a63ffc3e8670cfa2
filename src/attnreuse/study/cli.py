"""`attnreuse study`: every attention plan over several seeds, plus retrofits, on digits."""

from __future__ import annotations

import argparse

from attnreuse._cli_args import add_config_args, config_from_args
from attnreuse.study.config import StudyConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="accuracy of every plan over seeds (mean and spread against mha) and retrofit recovery",
        description="Train the digits rows (mha, reuse, share, skip and taylor pico ViTs and uniform_xs) on "
        "digits with one recipe for each seed, convert each mha run to share/skip plans and fine-tune them "
        "by distillation, and write OUTPUT/report.md and OUTPUT/study.json.",
    )
    add_config_args(p, StudyConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from attnreuse.study.run import JobFailed, run_study

    cfg = config_from_args(StudyConfig, args)
    try:
        report = run_study(cfg)
    except JobFailed as err:  # a run's own error line and its log, not a traceback of the study
        print(f"{args.prog}: error: {err}", file=sys.stderr)
        return 1
    print(report.read_text())
    return 0
