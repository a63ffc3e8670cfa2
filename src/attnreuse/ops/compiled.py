"""The compiled softmax pass of the FLAT tiles: C built on this machine at first use, or nothing.

`attnreuse.ops.softmax` normalises each tile of scores [rows, M] between its two matrix products.
PyTorch's CPU softmax reads such a row three times; `csrc/softmax_rows.c` reads it twice and leaves
the 1/sum scale to the [rows, Dv] output (see that file). Measured on a 2-core AMD EPYC (2 threads,
Reuse Attention with 8 value heads of 32, 16 paired rounds): the softmax pass of a 512 x 4096 tile
took 7.1 ms against PyTorch's 11.1, and the whole operator ran 1.07-1.10x faster at N = 1024 / 4096.

The C file is compiled once per machine with the system C compiler (`$CC`, else `cc`, `gcc` or
`clang`) for this CPU (`-march=native`) and OpenMP, into the user's cache
(`$ATTNREUSE_CACHE_DIR`, else `$XDG_CACHE_HOME/attnreuse`, else `~/.cache/attnreuse`), under a key
of the source, the flags, the compiler's version and this CPU's model and flags, so a cache shared
by two machines never runs code built for the other. It is written atomically (a concurrent
build by another process is harmless) and loaded with ctypes. Nothing else is needed: no Python
headers, no PyTorch headers (a build takes well under a second).

Where it cannot be used, the operators take PyTorch's softmax (the path the kernel is tested
against) and `status()` says why: `ATTNREUSE_COMPILED=0` in the environment, PyTorch built without
OpenMP (the kernel must share PyTorch's thread pool, not start a second one), no C compiler, a
failed build. `use_compiled(False)` turns it off for a block (tests, A/B benchmarks).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ENV_SWITCH", "cache_dir", "softmax_rows", "status", "use_compiled"]

ENV_SWITCH = "ATTNREUSE_COMPILED"
SOURCE = Path(__file__).with_name("csrc") / "softmax_rows.c"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC")
BUILD_TIMEOUT_S = 120

_lock = threading.Lock()
_state: dict[str, object] = {}  # "fn": the loaded C function or None, "status": why (see status())
_enabled = True


def cache_dir() -> Path:
    """Where built kernels are kept."""
    root = os.environ.get("ATTNREUSE_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "attnreuse"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def _cpu_identity() -> str:
    """This CPU's model and flag lines (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.read().split("\n\n")[0].splitlines()
        return "\n".join(line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features"))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _key(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    parts = (SOURCE.read_bytes().decode(), " ".join(FLAGS), version, platform.machine(), _cpu_identity())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _build(cc: str, target: Path) -> None:
    """Compile SOURCE into `target`, atomically (a temporary file in the same folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{Path(cc).name} exited {result.returncode}: {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _open(path: Path):
    fn = ctypes.CDLL(str(path)).attnreuse_softmax_rows
    fn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_int]
    fn.restype = None
    return fn


def _load() -> tuple[object, str]:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None, f"off: {ENV_SWITCH}=0"
    if not torch.backends.openmp.is_available():
        return None, "off: this PyTorch is built without OpenMP"
    cc = _compiler()
    if cc is None:
        return None, "off: no C compiler (set CC, or install cc/gcc/clang)"
    try:
        path = cache_dir() / "kernels" / _key(cc) / "softmax_rows.so"
        if path.exists():
            try:
                return _open(path), f"built: {path}"
            except OSError:  # a damaged file: build it again
                pass
        _build(cc, path)
        return _open(path), f"built: {path}"
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return None, f"off: build failed ({' '.join(str(err).split())[:300]})"


def _kernel():
    with _lock:
        if "status" not in _state:
            _state["fn"], _state["status"] = _load()
        return _state["fn"]


def status() -> str:
    """Whether the compiled kernel is in use: "built: PATH", or "off: WHY" (builds it on first call)."""
    _kernel()
    return "off: use_compiled(False)" if not _enabled else str(_state["status"])


def _reset() -> None:
    """Forget the loaded kernel, so the next call looks again (tests)."""
    with _lock:
        _state.clear()


@contextlib.contextmanager
def use_compiled(enabled: bool) -> Iterator[None]:
    """Turn the compiled kernel on or off for a block (off: PyTorch's softmax, the reference path)."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def softmax_rows(scores: Tensor, *, normalise: bool) -> Tensor | None | bool:
    """The softmax over the last dimension of float32 CPU `scores` [..., M] (contiguous), in place.

    normalise=True: `scores` become the probabilities; returns None. normalise=False: `scores`
    become exp(scores - row max) and the returned [..., 1] tensor holds 1 / row sum, for the
    caller to scale what it computes from them. Returns False (and leaves `scores` as they were)
    where the kernel is off or does not apply: the caller then takes PyTorch's softmax.
    """
    if (
        not _enabled
        or scores.dtype != torch.float32
        or scores.device.type != "cpu"
        or not scores.is_contiguous()
        or scores.requires_grad
        or scores.shape[-1] == 0
        or torch.compiler.is_compiling()
    ):
        return False
    fn = _kernel()
    if fn is None:
        return False
    cols = scores.shape[-1]
    rows = scores.numel() // max(1, cols)
    inv = None if normalise else torch.empty(*scores.shape[:-1], 1, dtype=torch.float32)
    if rows:
        fn(scores.data_ptr(), rows, cols, cols, None if inv is None else inv.data_ptr(), int(normalise),
           torch.get_num_threads())
    return inv
