"""One writer per output, and refusals that leave the directory as it was.

`staged_output` (hf convert, `attnreuse.hf.save`): the output is written beside its target and
renamed onto it, so a second writer is refused while the first works and the target only ever holds
one complete output. `claim_output` refuses a directory it may not write before making its `.lock`.
"""

from __future__ import annotations

import os

import pytest

from attnreuse._rundir import LOCK, RunDirError, claim_output, staged_output


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_the_output_appears_whole_with_no_lock_inside(tmp_path):
    target = tmp_path / "out"
    with staged_output(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".out.staging-")
        assert not target.exists()  # nothing at the target while the work runs
        (staging / "a.txt").write_text("a")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert _siblings(target) == []
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_a_failed_block_keeps_the_old_output_and_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyError):
        with staged_output(target) as staging:
            (staging / "half.txt").write_text("half")
            raise KeyError("crash")
    assert not (tmp_path / "new").exists()  # the parents it made are removed too
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_output(old):
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and (old / "model.txt").read_text() == "old"


def test_a_second_writer_is_refused_while_the_first_works(tmp_path):
    target = tmp_path / "out"
    with staged_output(target) as first:
        (first / "first.txt").write_text("1")
        with pytest.raises(RunDirError, match=f"--output {target} is in use by another attnreuse command \\(pid {os.getpid()}\\)"):
            with staged_output(target):
                pass
        assert first.is_dir()  # the refused writer did not touch the first one's staging directory
    assert [p.name for p in target.iterdir()] == ["first.txt"]


def test_a_killed_writers_staging_directory_is_removed(tmp_path):
    stale = tmp_path / ".out.staging-abc123"
    stale.mkdir()
    (stale / LOCK).write_text("4242")  # no process holds it
    (stale / "half.bin").write_bytes(b"x")
    with staged_output(tmp_path / "out") as staging:
        (staging / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_check_runs_again_before_the_rename(tmp_path):
    target = tmp_path / "out"

    def check(path):
        if path.exists():
            raise FileExistsError(f"{path} exists")

    with pytest.raises(FileExistsError, match="exists"):
        with staged_output(target, check=check) as staging:
            (staging / "mine").write_text("mine")
            target.mkdir()
            (target / "theirs").write_text("theirs")  # written by someone else meanwhile
    assert [p.name for p in target.iterdir()] == ["theirs"] and _siblings(target) == []


@pytest.mark.parametrize("content, message", [
    ({"config.json": '{"model_type": "bert"}'}, "is a transformers model directory"),
    ({"summary.json": "{}"}, "already holds a run"),
])
def test_a_refused_directory_gets_no_lock(tmp_path, content, message):
    out = tmp_path / "d"
    out.mkdir()
    for name, text in content.items():
        (out / name).write_text(text)
    with pytest.raises(RunDirError, match=message):
        with claim_output(out):
            pass
    assert sorted(p.name for p in out.iterdir()) == sorted(content)


def test_a_directory_in_use_is_reported_as_in_use_before_its_files(tmp_path):
    out = tmp_path / "run"
    with claim_output(out):
        (out / "summary.json").write_text("{}")
        with pytest.raises(RunDirError, match="is in use by another attnreuse command"):
            with claim_output(out, force=True):
                pass
        with pytest.raises(RunDirError, match="is in use by another attnreuse command"):
            with claim_output(out):
                pass
