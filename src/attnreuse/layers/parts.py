"""Named steps inside an attention core, for timing a real forward part by part.

The cores of `token_attention` wrap their inner steps (scores + softmax, A.V, a fused or linear
core) in `part(name)`. Nothing listens by default: `part` then hands back one shared no-op context,
so an untimed forward pays a function call per step. `recording(recorder)` makes every step call
`recorder(name)`, a context manager that times it (`attnreuse.measure.PartTimer`). Module hooks
time what is a module (projections, FFN); these time what is a function call inside one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

__all__ = ["STEPS", "part", "recording"]

# The steps cores mark: "scores_softmax" (softmax(s q k^T + bias), the map materialised), "av" (the
# map applied to the values), "core" (a core run as one step: fused SDPA / FLAT tiles, ViTALiTy's
# linear attention, SkipAt's Phi).
STEPS = ("scores_softmax", "av", "core")

_NULL = contextlib.nullcontext()
_recorder: Callable[[str], AbstractContextManager] | None = None


def part(name: str) -> AbstractContextManager:
    """The context a core wraps step `name` in: the recorder's, or a no-op when none records."""
    return _NULL if _recorder is None else _recorder(name)


@contextlib.contextmanager
def recording(recorder: Callable[[str], AbstractContextManager]) -> Iterator[None]:
    """Route every `part(name)` to `recorder(name)` for the block (one recorder at a time)."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("parts are already being recorded; recordings do not nest")
    _recorder = recorder
    try:
        yield
    finally:
        _recorder = None
