"""Every command and snippet in README.md and docs/*.md is executed here.

Python blocks run in one namespace per file, in order. Shell blocks run line by line through the
`attnreuse` command's entry point (`attnreuse.cli.main`, in this process) in a temporary directory. A block may be preceded by a marker:
  <!-- test: run CMD ; CMD -->   run these commands instead (a small configuration of a long job)
  <!-- test: skip REASON -->     not run here; REASON names the test that covers it
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"(?:<!--\s*test:\s*(?P<marker>.*?)\s*-->\s*\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
SHELL_LANGS = {"bash", "sh", "console", "shell"}


def _blocks(path: Path):
    for m in FENCE.finditer(path.read_text()):
        yield m.group("lang"), m.group("body"), m.group("marker")


SLOW_DOCS = ("README.md", "docs/benchmarks.md")  # minutes of commands each: run first (tests/conftest.py)


def _doc_ids():
    return [pytest.param(doc, marks=pytest.mark.slow) if doc in SLOW_DOCS else doc
            for doc in (p.relative_to(ROOT).as_posix() for p in DOCS if p.exists())]


def _commands(body: str, marker: str | None) -> list[str]:
    if marker and marker.startswith("run "):
        return [c.strip() for c in marker[4:].split(";") if c.strip()]
    lines = []
    for line in body.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line.removeprefix("$ "))
    return lines


def _run_shell(cmd: str, capsys) -> None:
    """One `attnreuse` command, run in this process through the console script's entry point
    (`attnreuse.cli.main`): a subprocess paid ~6 s of torch and timm imports per command, most of
    these tests' time. The installed script itself: tests/test_command_line.py."""
    import torch

    from attnreuse.cli import main

    argv = shlex.split(cmd)
    exe = Path(sys.executable).parent / argv[0]
    if argv[0] != "attnreuse" or not exe.exists():
        pytest.fail(f"docs command {cmd!r} is neither an `attnreuse` command nor marked skip/run")
    threads = torch.get_num_threads()  # commands with --threads set the process's count
    capsys.readouterr()
    try:
        code = main(argv[1:])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert code == 0, f"{cmd!r} failed ({code}):\n{out[-2000:]}\n{err[-4000:]}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_doc_runs(doc, tmp_path, monkeypatch, capsys):
    path = ROOT / doc
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs:{doc}"}
    ran = 0
    for lang, body, marker in _blocks(path):
        if marker and marker.startswith("skip"):
            assert len(marker) > len("skip "), f"{doc}: a skip marker must give its reason"
            continue
        if lang == "python":
            exec(compile(body, f"{doc}:python", "exec"), namespace)  # noqa: S102 - the docs are ours
            ran += 1
        elif lang in SHELL_LANGS:
            for cmd in _commands(body, marker):
                _run_shell(cmd, capsys)
                ran += 1
    runnable = [b for b in _blocks(path) if not (b[2] or "").startswith("skip") and (b[0] == "python" or b[0] in SHELL_LANGS)]
    assert ran > 0 or not runnable, f"{doc}: no block ran"
