"""Which execution path `softmax_attention` takes. Chosen once, flippable by tests.

- "auto":  PyTorch's fused SDPA where it applies (one map per value head, Dk == Dv, no map
           returned), else the FLAT row-tiled kernel, which also writes the map when it is
           returned (at N = 1500, 8 heads of 64, it ran ~1.25x the dense path on one CPU thread,
           level with it at N <= 1000, with half the peak memory); on a GPU a returned map is
           written by the dense path (the tile loop launches a few kernels per tile: on an H200 a
           Whisper-base share2 encoder ran 3-8x slower with it at N = 1000-3000); the dense path
           while a graph is traced for export (`tracing()`).
- "tiled": always the FLAT row-tiled kernel (exact; extra memory grows with N, not N^2; with a
           returned map, the map plus one tile).
- "dense": materialise the whole [B, Hq, N, M] map (the unfused baseline).
- "sdpa":  always `torch.nn.functional.scaled_dot_product_attention`; raises where it cannot
           express the call (shared maps, Dk != Dv, a returned map).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "tiled", "dense", "sdpa")
_current = "auto"


def get_backend() -> str:
    return _current


def set_backend(name: str) -> None:
    global _current
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _current = name


def tracing() -> bool:
    """True while TorchScript tracing or ONNX export records the graph. The eager fast paths
    write into preallocated outputs (`out=`), which the tracer does not record, so under tracing
    the operators emit their plain vectorised form instead (same maths, tested the same way)."""
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
