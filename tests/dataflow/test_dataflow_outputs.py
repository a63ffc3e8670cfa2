"""`attnreuse dataflow --json/--plot`: an earlier result is kept unless --force, the two outputs
are different files, and an output that cannot be created is named before the model runs."""

from __future__ import annotations

import pytest
from cliutil import fails

from attnreuse.cli import main

ARGV = ["dataflow", "--hw", "flat-cloud", "--model", "bert-base", "--seq", "512", "--batch", "2"]


@pytest.mark.parametrize("flag, name", [("--json", "r.json"), ("--plot", "r.png")])
def test_an_existing_result_is_kept_unless_forced(capsys, tmp_path, flag, name):
    # a second `dataflow --json r.json` silently replaced the first one's records
    out = tmp_path / name
    out.write_text("earlier")
    fails(capsys, [*ARGV, flag, str(out)], f"{flag} {out} exists; pass --force to replace it")
    assert out.read_text() == "earlier"
    assert main([*ARGV, flag, str(out), "--force"]) == 0 and out.read_bytes() != b"earlier"


def test_json_and_plot_must_be_different_files(capsys, tmp_path):
    # the PNG written after the JSON replaced it, exit 0
    out = tmp_path / "r.png"
    fails(capsys, [*ARGV, "--json", str(out), "--plot", str(tmp_path / "." / "r.png")], "--json and --plot both name")
    assert list(tmp_path.iterdir()) == []


def test_the_plot_is_named_as_the_png_it_is(capsys, tmp_path):
    # `--plot r.txt` wrote PNG bytes into r.txt, exit 0
    fails(capsys, [*ARGV, "--plot", str(tmp_path / "r.txt")], "the plot is a PNG image; end the name in .png")
    assert list(tmp_path.iterdir()) == []


def test_an_output_under_a_file_is_named(capsys, tmp_path):
    # failed with "[Errno 17] File exists: 'a'", naming no flag
    (tmp_path / "a").write_text("a file")
    fails(capsys, [*ARGV, "--json", str(tmp_path / "a" / "r.json")], "--json", "cannot create it", "is a file")
