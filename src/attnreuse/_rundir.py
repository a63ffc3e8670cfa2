"""One writer per run directory, and no run overwritten by accident.

`claim_output(path, force=..., resume=...)` is entered by every command that writes a run
directory (train, convert, analyze, the hf jobs) before it does any work:
- `path` must not be an existing file;
- a directory that already holds a run (any of `RUN_FILES`) is refused unless the command resumes
  it or `force` is given; with `force` the old run's files are removed first, so no metrics of the
  old run stay beside the new one;
- an exclusive, non-blocking `flock` on `path/.lock` is held for the whole command: a second
  command on the same directory stops at once with a line naming the holder's pid;
- `path` must not be, nor hold as one of its run files, a file or directory the command reads
  (`reads`): with `force` the input would be deleted before it is read;
- `force` and `resume` contradict each other: one of them.

`staged_output(path, check=...)` is entered by a command whose output directory is replaced whole
(`hf convert`'s model directory, where a `.lock` inside would be swept away by the replacement).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK = ".lock"
# What train/convert/analyze write; a directory holding any of them holds a run.
RUN_FILES = (
    "checkpoint.json", "checkpoints", "config.json", "model.json", "metrics.jsonl", "summary.json",
    "convert.json", "similarity.json", "analysis.json", "job.json",
)


class RunDirError(ValueError):
    """The output directory cannot be used (a file, another run's, or in use)."""


def _is_transformers_model(path: Path) -> bool:
    """Whether `path` holds a transformers config.json (one naming a `model_type`; no run's does).
    Such a directory (a transformers model, an `hf convert` output) is no run directory, even with
    `force`, which would remove that config.json as a run's file."""
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):  # none, not JSON, or not a JSON object
        return False


def _holds_run(path: Path) -> list[str]:
    return [name for name in RUN_FILES if (path / name).exists()]


def _lock(fd: int, flag: str, out: Path, kind: int = fcntl.LOCK_EX) -> None:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise RunDirError(f"{flag} {out} is in use by another attnreuse command (pid {holder}); "
                          "wait for it or choose another directory") from None


def _check_free(lock: Path, flag: str, out: Path) -> None:
    """Raise if another command holds `lock` (tested with a shared lock, released at once)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # gone meanwhile, or unreadable: the exclusive lock decides
        return
    try:
        _lock(fd, flag, out, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _refuse(out: Path, flag: str, *, force: bool, resume: bool) -> list[str]:
    """Raise if the existing directory `out` may not be written; else the run files it holds."""
    if _is_transformers_model(out):
        raise RunDirError(f"{flag} {out} is a transformers model directory (its config.json names a model_type), "
                          "not a run: --force would remove that config.json; choose another directory")
    existing = _holds_run(out)
    if existing and not resume and not force:
        raise RunDirError(f"{flag} {out} already holds a run ({', '.join(existing)}); "
                          "pass --force to replace it or choose another directory")
    return existing


@contextlib.contextmanager
def claim_output(path: str | os.PathLike, *, flag: str = "--output", force: bool = False, resume: bool = False,
                 reads: tuple[tuple[str, str | os.PathLike | None], ...] = ()) -> Iterator[Path]:
    """Hold `path` as this process's run directory (created if missing) for the `with` block.
    `reads`: (flag, path) of each input the command reads (None or a path that does not exist,
    such as a model name, is skipped)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{flag} {out} is an existing file; give a directory")
    if force and resume:
        raise RunDirError(f"--resume continues the run in {flag} {out} and --force replaces it; give one of them")
    for read_flag, read in reads:
        if read is None or not Path(read).exists():
            continue
        source, run_parts = Path(read).resolve(), [out.resolve() / name for name in RUN_FILES]
        if source == out.resolve() or any(source == p or p in source.parents for p in run_parts):
            raise RunDirError(f"{flag} {out} is or holds the {read_flag} {read} this command reads; "
                              "write to another directory")
    if out.is_dir():  # refused before the lock is made: a refused directory is left as it was
        if (out / LOCK).exists():
            _check_free(out / LOCK, flag, out)
        _refuse(out, flag, force=force, resume=resume)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # an ancestor that is a file, a read-only or missing mount, no permission
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise RunDirError(f"{flag} {out}: cannot write a run there ({err.strerror}: {err.filename})") from None
    try:
        _lock(fd, flag, out)
        existing = _refuse(out, flag, force=force, resume=resume)  # again, now that no other command can write
        if existing and not resume:
            for name in existing:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield out
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [LOCK]:
            shutil.rmtree(out)  # a command that failed before writing leaves nothing behind
        raise
    finally:
        os.close(fd)  # releases the lock; the .lock file stays (removing it would race)


STAGING = ".staging-"  # `.<name>.staging-<random>`: the sibling a staged output is written in


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on `directory` itself, held for the (short) `with` block."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_output(path: str | os.PathLike, *, flag: str = "--output",
                  check: Callable[[Path], None] = lambda out: None) -> Iterator[Path]:
    """Write a directory that replaces `path` whole: the block gets an empty staging directory
    beside `path` (`.<name>.staging-*`), renamed onto `path` (whose old content is removed) when the
    block ends and removed when it raises, so `path` only ever holds one complete output.

    One writer per `path`: the staging directory's `.lock` is held for the whole block, and a second
    command staging the same `path` stops at once with a line naming the holder's pid. A staging
    directory left by a killed command (its lock free) is removed. `check(path)` raises if `path`
    may not be replaced; it runs before the staging directory is made and again just before the
    rename. Claiming and renaming hold a lock on the parent directory, so neither races another."""
    out = Path(path)
    check(out)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # removed again if the block fails
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{flag} {out}: cannot write there ({err.strerror}: {err.filename})") from None
    prefix = f".{out.name}{STAGING}"
    with _directory_lock(out.parent):
        for other in [p for p in out.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]:
            if (other / LOCK).exists():
                _check_free(other / LOCK, flag, out)
            shutil.rmtree(other, ignore_errors=True)  # a killed command's: no process holds it
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
        fd = os.open(staging / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and unseen: cannot be held
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield staging
        with _directory_lock(out.parent):
            check(out)
            os.unlink(staging / LOCK)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; it reads like any other directory
            if out.exists():
                shutil.rmtree(out)
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for directory in made:  # deepest first; one that another process has written to stays
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    finally:
        os.close(fd)
