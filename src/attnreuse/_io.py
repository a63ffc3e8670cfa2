"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash mid-write leaves the previous file intact; readers never see a half-written file.
`read_json` reads such a file back, naming it when it is damaged; `new_output_file` checks, before
a command's work, that it may write its output file (`check_creatable`: that it can be created at all).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success rename it onto `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; results should read like any new file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def new_file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> Any:
    """The JSON value in `path`. A file that is not JSON (truncated, empty, binary), or with `keys`
    not a JSON object holding each of them, is a ValueError naming the file."""
    target = Path(path)
    try:
        value = json.loads(target.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{target} is not valid JSON ({err}); it is damaged: restore or re-create it") from None
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise ValueError(f"{target} holds no {', '.join(map(repr, missing))}; it is damaged or another tool's file")
    return value


def check_creatable(flag: str, target: str | os.PathLike) -> None:
    """An error naming `flag` unless `target` (a file or directory) can be created: its nearest
    existing ancestor is a writable directory, not a file (checked before the work, not when the
    result is written)."""
    parent = Path(target).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{flag} {target}: cannot create it, {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {target}: cannot create it, {parent} is not a writable directory")
    # what the permission bits do not tell: a read-only mount, or a file system that takes no new
    # files (/proc, /sys), which refuses even root: a file is made there and removed at once
    try:
        fd, probe = tempfile.mkstemp(prefix=".attnreuse-probe-", dir=parent)
    except OSError as err:
        raise PermissionError(f"{flag} {target}: cannot create it, {parent} takes no new files ({err.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def new_output_file(flag: str, path: str | os.PathLike | None, *, force: bool = False,
                    beside: tuple[str | os.PathLike, ...] = ()) -> None:
    """Check, before any work, that the command can write the output file `path` (given as `flag`)
    and the files it writes `beside` it: an error naming `flag` when `path` is a directory, when it
    cannot be created (an ancestor is a file, or the nearest existing directory is not writable),
    or, unless `force`, when `path` or a file beside it already exists (an earlier result is
    replaced only when asked for: --force). None checks nothing."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{flag} {target} is a directory; give a file name")
    check_creatable(flag, target)
    if force:
        return
    existing = [str(p) for p in dict.fromkeys(map(str, (target, *beside))) if Path(p).exists()]
    if existing == [str(target)]:
        raise FileExistsError(f"{flag} {target} exists; pass --force to replace it or choose another name")
    if existing:
        raise FileExistsError(f"{flag} {target}: {', '.join(existing)} already exist(s); "
                              "pass --force to replace them or choose another name")
