"""The `attnreuse` command line: every tool registers, help works, user errors are one line."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnreuse import cli
from attnreuse.bench import cli as bench_cli


def test_every_tool_and_bench_command_registers():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert "bench" in commands
    bench = commands["bench"]._subparsers._group_actions[0].choices
    assert "ops" in bench
    assert len(bench) == len(bench_cli._COMMANDS) and len(commands) >= len(cli._TOOLS)


def test_no_command_lists_the_commands_and_exits_2(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: attnreuse") and "hf" in err and "bench" in err


@pytest.mark.parametrize("argv, needle", [
    (["frob"], "attnreuse: error: argument COMMAND: invalid choice: 'frob'"),
    (["bench", "ops", "--ops", "nope"], "attnreuse bench ops: error: argument --ops: invalid choice: 'nope'"),
    (["bench", "models", "--rounds", "x"], "attnreuse bench models: error: argument --rounds: invalid int value: 'x'"),
    (["hf", "eval"], "attnreuse hf eval: error: the following arguments are required"),
    # an empty comma-separated value read as the flag not given, and ran its default unasked
    (["bench", "models", "uniform_xs", "--runtimes", ""],
     "attnreuse bench models: error: argument --runtimes: expected one or more comma-separated values, got ''"),
    (["hf", "eval", "m", "--teacher", "t", "--runtimes", " , "],
     "attnreuse hf eval: error: argument --runtimes: expected one or more comma-separated values, got ' , '"),
    (["demo", "--stages", ""], "attnreuse demo: error: argument --stages: expected one or more comma-separated"),
])  # fmt: skip
def test_argparse_errors_are_one_line_naming_the_command(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    prog = needle.split(": error")[0]
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith(needle) and err.endswith(f"(see `{prog} --help`)\n"), err


def test_console_script_help():
    script = Path(sys.executable).with_name("attnreuse")
    command = [str(script)] if script.exists() else [shutil.which("attnreuse") or "attnreuse"]
    result = subprocess.run([*command, "bench", "ops", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--plot" in result.stdout


def test_user_error_is_one_line_exit_2(capsys):
    assert cli.main(["bench", "ops", "--quick", "--tokens", "-5"]) == 2
    err = capsys.readouterr().err
    assert err == "attnreuse bench ops: error: --tokens must be a non-empty list of positive ints, got [-5]\n"
