"""attnreuse's compiled CPU kernels (`ops/native/*.cpp`), built on first use.

The one kernel so far writes a returned attention map fused with the attention that makes it
(`native/map_attention.cpp`): the first layer of a share group. PyTorch's fused SDPA never
materialises a map, so a layer that must hand its map on cannot use it, and the unfused path
streams the map through memory four times (scores, softmax read and write, A.V). See
docs/map_sharing.md for what that costs and what the kernel gains.

Built with torch's own C++ extension loader (`torch.utils.cpp_extension.load`: a C++ compiler
and ninja) into torch's extension cache, once per source and CPU capability, for the SIMD level
ATen itself dispatches to on this CPU (`torch.backends.cpu.get_cpu_capability()`), so the kernel
uses ATen's vectorised exp and MKL through `at::mm_out`, as PyTorch's own CPU kernels do. The
build takes 10-40 s and is logged at INFO on the `attnreuse` logger (the command line prints it);
later processes load the cached library. Where the build fails (no compiler), `available()` is False and `reason()` says
why; the `native` backend then raises that reason and `auto` keeps the dense path.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "map_attention", "reason"]

_SOURCE = Path(__file__).with_name("native") / "map_attention.cpp"
_lock = threading.Lock()
_error: str | None = None
_loaded = False

# ATen's CPU capability -> the flags its vectorised headers need (as torch builds its own kernels)
_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
}


def _ninja_on_path() -> None:
    """torch's loader runs `ninja` from PATH; the `ninja` wheel (a dependency) puts it beside the
    interpreter's scripts, which is on PATH only in an activated environment."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build() -> None:
    global _loaded, _error
    capability = torch.backends.cpu.get_cpu_capability()
    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_log.level
    cpp_log.setLevel(logging.ERROR)  # it warns at import that this machine has no CUDA runtime
    try:
        from torch.utils import cpp_extension

        _ninja_on_path()
        logging.getLogger("attnreuse").info(
            "building attnreuse's native CPU kernel for %s (once per machine, 10-40 s)", capability)
        cpp_extension.load(
            name=f"attnreuse_native_{capability.lower()}",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-fopenmp", *_FLAGS.get(capability, [])],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
        _loaded = True
    except Exception as exc:  # noqa: BLE001 - any build or load failure leaves the kernel unavailable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _error = (f"attnreuse's native CPU kernel could not be built with torch's C++ extension "
                  f"loader (it needs a C++ compiler and ninja): {type(exc).__name__}: {first}")
        logging.getLogger("attnreuse").info("%s; the auto backend writes maps on the dense path", _error)
    finally:
        cpp_log.setLevel(level)


def available() -> bool:
    """True once the kernel is loaded in this process; the first call builds or loads it."""
    with _lock:
        if not _loaded and _error is None:
            _build()
        return _loaded


def reason() -> str | None:
    """Why the kernel is unavailable (None while it is available or not yet tried)."""
    return _error


def map_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, map_out: Tensor | None,
                  rows: int, stream: bool) -> Tensor:
    """softmax(q k^T + bias) v, writing the map into `map_out` when given (float32, CPU).

    q: [B, H, N, Dk] already scaled, k: [B, H, M, Dk], v: [B, H, M, Dv], bias: None or a view
    broadcast to [B, H, N, M] with unit last stride, map_out: None or a contiguous [B, H, N, M]
    -> out [B, H, N, Dv]; `rows`: the query rows each thread takes at a time; `stream`: write the
    map with non-temporal stores, past the cache (x86 with AVX; plain stores elsewhere).
    """
    if not available():
        raise RuntimeError(_error)
    return torch.ops.attnreuse_native.map_attention(q, k, v, bias, map_out, rows, stream)
