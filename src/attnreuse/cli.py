"""The `attnreuse` command line: one sub-command per tool, each defined in its tool's `cli` module.

Tool modules only build argument parsers at import; the heavy imports happen when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, like every other user error: `PROG: error:
    MESSAGE (see `PROG --help`)` on stderr, exit 2. Sub-command parsers are of this class too
    (argparse makes them with the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Give every parser's namespace its full command (`attnreuse bench ops`) as `prog`, for the
    error line of `main`; a nested sub-command's default replaces its parent's."""
    parser.set_defaults(prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _name_commands(child)


def _message(err: BaseException) -> str:
    """The error's message. A DataLoader worker's error is raised again in the main process with
    the worker's traceback in its message (`--workers N`): the message is that traceback's last line."""
    text = str(err).strip()
    if "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        text = last.removeprefix(f"{type(err).__name__}: ")
    return text


def _takes(parser: argparse.ArgumentParser, prog: str, option: str) -> bool:
    """Whether the (sub-)command `prog` under `parser` has the option `option`."""
    if parser.prog == prog:
        return any(option in action.option_strings for action in parser._actions)
    return any(_takes(child, prog, option) for action in parser._actions
               if isinstance(action, argparse._SubParsersAction) for child in action.choices.values())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attnreuse",
        description="Vision transformers that reuse attention: benchmark, train, export, analyse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _TOOLS:
        importlib.import_module(name).register(sub)
    _name_commands(parser)
    return parser


class _Stderr(logging.StreamHandler):
    """Writes each notice to `sys.stderr` as it is when the notice comes (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _notices_to_stderr() -> logging.Handler | None:
    """The library's notices (the `attnreuse` logger at INFO: a native kernel being built, which takes
    10-40 s once, or why it could not be) as `attnreuse: ...` lines on stderr; nothing when the
    logger already has a handler. Returns the handler it added."""
    log = logging.getLogger("attnreuse")
    if log.handlers:
        return None
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("attnreuse: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # bare `attnreuse`: the commands, not one error line
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    _notices_to_stderr()
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError, FloatingPointError) as err:
        # User errors get one clear line, not a stack trace.
        print(f"{args.prog}: error: {_message(err)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = _EXTRAS.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"{args.prog}: error: this needs {err.name}, which is in the [{extra}] extra: "
              f"pip install 'attnreuse[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Results are written atomically, so what is on disk is the last complete checkpoint/file.
        hint = ""
        if _takes(parser, args.prog, "--resume"):
            hint = " (a run directory keeps its last checkpoint: `--resume` continues it)"
        print(f"{args.prog}: interrupted; files already written are complete{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
