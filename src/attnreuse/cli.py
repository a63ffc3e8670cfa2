"""The `attnreuse` command line: one sub-command per tool, each defined in its tool's `cli` module.

Tool modules only build argument parsers at import; the heavy imports happen when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`, which adds its sub-command and sets `func`.
_TOOLS = (
    "attnreuse.bench.cli",
    "attnreuse.dataflow.cli",
    "attnreuse.export.cli",
    "attnreuse.train.cli",
    "attnreuse.analysis.cli",
    "attnreuse.demo.cli",
    "attnreuse.study.cli",
    "attnreuse.hf.cli",
)

# Optional top-level modules -> the extra (pyproject.toml) that installs them.
_EXTRAS = {
    "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "matplotlib": "bench", "sklearn": "data",
    "transformers": "hf", "tokenizers": "hf",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnreuse",
        description="Vision transformers that reuse attention: benchmark, train, export, analyse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _TOOLS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError, FloatingPointError) as err:
        # User errors get one clear line, not a stack trace.
        print(f"attnreuse {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = _EXTRAS.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"attnreuse {args.command}: error: this needs {err.name}, which is in the [{extra}] extra: "
              f"pip install 'attnreuse[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Results are written atomically, so what is on disk is the last complete checkpoint/file.
        print(f"attnreuse {args.command}: interrupted; files already written are complete "
              "(a run directory keeps its last checkpoint: `--resume` continues it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
