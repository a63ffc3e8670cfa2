"""Reused CPU memory for the attention maps a layer hands to later layers (cross-layer map reuse).

A returned map is large (8 heads at N = 1500 frames: 72 MB float32; 288 MB at 3000) and short-lived:
the first layer of a share group writes it, the group's later layers read it, then it is dropped.
On the CPU every such allocation is a fresh `mmap` from glibc (blocks over 32 MB always are), and
writing it page-faults once per 4 KiB page: measured on a 2-core AMD EPYC, materialising
8 x 1500 x 1500 maps took 126 ms with a fresh allocation and 65 ms in reused memory (torch 2.14.1,
2 threads). ONNX Runtime avoids this with its arena allocator; PyTorch has no caching allocator for
CPU tensors, so the operators keep a few map buffers themselves.

A buffer is handed out again only when nothing but this pool refers to its storage (every tensor
and view of the last map that used it is gone, autograd's saved copy included), so no live map is
ever overwritten. The pool holds as many buffers as maps were alive at once (two in a model whose
share groups follow each other), each as large as the largest map it served; a map that fits no
idle buffer replaces the idle ones. `release_map_workspace()` frees them.
GPU maps use the device's caching allocator and never come here.

The one piece of module state in `ops` (whose operators are otherwise plain functions): it holds
memory, not values, so no result depends on it, as with a BLAS library's workspace.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

__all__ = ["MIN_BYTES", "map_buffer", "release_map_workspace", "workspace_bytes"]

# Below this a fresh allocation comes from glibc's heap without page faults worth saving.
MIN_BYTES = 4 << 20

_lock = threading.Lock()
_pool: list[torch.UntypedStorage] = []
_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private; without it, no pooling


def _free(storage: torch.UntypedStorage) -> bool:
    """True when only the pool refers to `storage`."""
    return _use_count(storage._cdata) == 1


def map_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised contiguous tensor of `shape`, in pooled memory when it is a large CPU map."""
    numel = 1
    for size in shape:
        numel *= size
    nbytes = numel * dtype.itemsize
    if device.type != "cpu" or nbytes < MIN_BYTES or _use_count is None:
        return torch.empty(shape, dtype=dtype, device=device)
    with _lock:
        idle = [s for s in _pool if _free(s)]
        fits = [s for s in idle if s.nbytes() >= nbytes]
        if fits:
            storage = min(fits, key=lambda s: s.nbytes())
        else:  # every idle buffer is too small for this map: they go, the new one stays
            for s in idle:
                _pool.remove(s)
            storage = torch.UntypedStorage(nbytes)
            _pool.append(storage)
        return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def release_map_workspace() -> None:
    """Drop the pooled map buffers (memory returns to the system once no map uses it)."""
    with _lock:
        _pool.clear()


def workspace_bytes() -> int:
    """Bytes the pool holds now."""
    with _lock:
        return sum(s.nbytes() for s in _pool)
