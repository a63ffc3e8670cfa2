"""Which execution path `softmax_attention` takes. Chosen once, flippable by tests.

- "auto":  PyTorch's fused SDPA where it applies (one map per value head, Dk == Dv, no map
           returned), else the FLAT row-tiled kernel. A returned map on the CPU where no gradient
           is recorded is written by the native kernel when it is float32 and at least
           `softmax.NATIVE_MAP_BYTES` (64 MiB: 8 heads at N >= 1449; `ops._native`: the map streamed
           out once, fused with the attention that makes it; built on first use, and where it
           cannot be built, as without a C++ compiler, the dense path), and by the dense path in
           place otherwise (in pooled memory: the same peak memory as the tiles, and on an Intel
           Xeon with AMX, 1 and 2 threads, float32 and bfloat16, N = 65-3000, about as fast as the
           tiles or faster: 1.0-1.6x at N >= 1000 with 8 heads of 64, `bench ops --ops dense_mha
           map_mha`); under a gradient the tiles write it (their backward recomputes each tile
           instead of keeping the scores); on a GPU always the dense path (the tile loop launches
           a few kernels per tile: on an H200 a Whisper-base share2 encoder ran 3-8x slower with
           it at N = 1000-3000); the dense path inside `exporting()` (graph capture for export).
- "tiled": always the FLAT row-tiled kernel (exact; extra memory grows with N, not N^2; with a
           returned map, the map plus one tile).
- "dense": materialise the whole [B, Hq, N, M] map (the unfused baseline).
- "sdpa":  always `torch.nn.functional.scaled_dot_product_attention`; raises where it cannot
           express the call (shared maps, Dk != Dv, a returned map).
- "native": always the native kernel, map returned or not; raises where it cannot run the call
           (a gradient, a dtype other than float32, a GPU, graph capture) or could not be built.

Graph capture for export is a second switch, set once by the exporter (`exporting()`, as timm's
`set_exportable`): inside it every operator emits its plain vectorised form, since the eager fast
paths write into preallocated outputs (`out=`), which TorchScript tracing / ONNX export do not
record. The operators read the flag; they do not inspect the tracer. A trace taken outside it with
the tiled backend is refused (`tracing()` is consulted only for that error).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "tiled", "dense", "sdpa", "native")
_current = "auto"
_exporting = False


def get_backend() -> str:
    return _current


def set_backend(name: str) -> None:
    global _current
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _current = name


def is_exporting() -> bool:
    """True inside `exporting()`: the operators emit their plain vectorised forms (same maths,
    tested the same way), which a tracer records."""
    return _exporting


@contextlib.contextmanager
def exporting() -> Iterator[None]:
    """Graph capture for export: plain operator forms and the dense backend for the block
    (`with exporting(): torch.onnx.export(...)`)."""
    global _exporting
    previous = _exporting
    _exporting = True
    try:
        with use_backend("dense"):
            yield
    finally:
        _exporting = previous


def tracing() -> bool:
    """True while TorchScript tracing or ONNX export records the graph (used only to refuse a
    trace of the tiled backend taken outside `exporting()`, whose out= writes it would miss)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def symbolic_tracing() -> bool:
    """True while `torch.fx` symbolically traces a model (timm's `features_only` and
    `create_feature_extractor`): inputs are Proxies, so shape checks on them step aside and stay
    out of the graph. The operators themselves are leaves of such a graph (`attnreuse.ops`), so
    their checks run on the real tensors when the graph runs."""
    return torch.fx._symbolic_trace.is_fx_symbolic_tracing()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily select a backend: `with use_backend("tiled"): ...`."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)
