"""Run directories of the hf jobs: one writer at a time, never overwritten without `force`.

A run directory holds a `.lock` (the writer's pid) while a job writes to it. A second job finds
the lock and stops with a message naming the directory and the pid; a lock left by a process that
no longer exists (a crash, a kill -9) is taken over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["claim_output", "run_lock"]

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold `run_dir/.lock` for the duration of the block (creating the directory)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid) and pid != os.getpid():
                raise FileExistsError(f"{run_dir} is being written by another job (pid {pid}); wait for it or use another --output") from None
            lock.unlink(missing_ok=True)
    else:  # pragma: no cover - two stale takeovers in a row
        raise FileExistsError(f"{run_dir}: could not take its lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield run_dir
    finally:
        lock.unlink(missing_ok=True)


def claim_output(path: str | os.PathLike, *, force: bool, resume: bool = False) -> Path:
    """Check `--output` before any work: a file is an error; an existing non-empty directory is an
    error unless `force` (then it is emptied) or `resume` (then it is kept)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--output {path} is an existing file; give a directory path")
    if path.is_dir() and any(p.name != LOCK for p in path.iterdir()) and not resume:
        if not force:
            raise FileExistsError(f"--output {path} already holds a run; pass --force to replace it or --resume to continue it")
        for child in path.iterdir():
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return path
