"""`attnreuse bench ...`: one sub-command per benchmark, each defined in its own module.

Each listed module defines `register(subparsers)`; heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib

_COMMANDS = (
    "attnreuse.bench.ops",
    "attnreuse.bench.models",
    "attnreuse.bench.report",
    "attnreuse.bench.study",
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark operators and models on this machine")
    bench_sub = parser.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    for name in _COMMANDS:
        importlib.import_module(name).register(bench_sub)
