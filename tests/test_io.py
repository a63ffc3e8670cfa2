"""Atomic outputs: a failed write leaves the previous file and no temporary behind."""

import os

import pytest

from attnreuse._io import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_follows_umask(tmp_path):
    target = tmp_path / "sub" / "result.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "ckpt.bin"
    atomic_write_text(target, "good")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_where_no_file_can_be_made_is_refused_before_the_work(capsys, tmp_path):
    """/proc takes no new files, even from root, whose permission bits say writable: `hf eval --json
    /proc/x.json` ran its minutes of timing and then failed to write."""
    from attnreuse._io import new_output_file
    from cliutil import fails

    with pytest.raises(PermissionError, match="--json /proc/attnreuse.json: cannot create it, /proc takes no new files"):
        new_output_file("--json", "/proc/attnreuse.json")
    fails(capsys, ["dataflow", "--json", "/proc/attnreuse.json"], "--json /proc/attnreuse.json: cannot create it")
    new_output_file("--json", tmp_path / "ok.json")  # a writable directory passes, and keeps no probe file
    assert list(tmp_path.iterdir()) == []
