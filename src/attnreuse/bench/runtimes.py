"""The runtimes `bench models` compares, each prepared once and then called with no arguments.

- "eager":    PyTorch eager, `torch.inference_mode`, the deployed (ConvBN-folded) model.
- "compile":  `torch.compile` (inductor, CPU C++ code generation) of the deployed model.
- "ort":      ONNX Runtime fp32 of the exported file (`attnreuse.deploy`, parity-checked), by
              default from the TorchScript-based exporter, as `attnreuse export` writes it
              (`exporter="dynamo"`: torch.export's graph, what bench models timed before 2026-12-02).
- "ort-int8": ONNX Runtime of that file quantised to int8 (static, calibrated on digits train
              images, or dynamic).
- "ort-fused": ONNX Runtime fp32 of the export with every attention rewritten into com.microsoft
              MultiHeadAttention (`onnx_fuse`), parity-checked like "ort": time it beside "ort".
Threads: torch uses `threads` intra-op threads (set by the caller); ONNX Runtime sessions are
pinned with `intra_op_num_threads=threads` and one inter-op thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnreuse.onnx_fuse import RUNTIME_OP

__all__ = ["RUNTIMES", "prepare_runtime"]

RUNTIMES = ("eager", "compile", "ort", "ort-int8", "ort-fused")


def _eager(model: nn.Module, x: Tensor) -> Callable[[], Any]:
    def call():
        with torch.inference_mode():
            return model(x)

    return call


def prepare_runtime(
    runtime: str,
    model: nn.Module,
    x: Tensor,
    *,
    threads: int,
    work_dir: Path,
    calib_images: Tensor | None,
    int8_mode: str = "static",
    exporter: str = "torchscript",
) -> tuple[Callable[[], Any], dict]:
    """(a no-argument call running one batch `x` [B, C, H, W] of real images, facts about the
    preparation).

    `model` is the deployed eval model; ONNX files go to `work_dir` (fp32 `model.onnx`, checked
    against eager on `x`, is reused by "ort-int8" when "ort" ran first); `exporter` (deploy.EXPORTERS)
    writes every one of them, and the facts name it. Raises whatever the
    runtime raises; the caller records it.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "eager":
        return _eager(model, x), {}
    if runtime == "compile":
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        call = _eager(compiled, x)
        t0 = time.perf_counter()
        call()
        return call, {"compile_s": time.perf_counter() - t0}

    from attnreuse.deploy import INPUT_NAME, export_onnx, ort_session

    if runtime == "ort-fused":
        fused = work_dir / "model.fused.onnx"
        result = export_onnx(model, fused, x, batch=len(x), threads=threads, fold=False, fused_attention=RUNTIME_OP,
                             exporter=exporter)
        session = ort_session(fused, threads=threads)
        feed = {INPUT_NAME: x.numpy()}
        return (lambda: session.run(None, feed)), {
            "onnx_max_abs_diff": result.max_abs_diff, "onnx_max_abs_logit": result.max_abs_output,
            "onnx_size_bytes": result.size_bytes, "fused_attention": RUNTIME_OP,
            "fused_attention_nodes": result.fused_attention_nodes, "onnx_exporter": exporter,
        }
    fp32 = work_dir / "model.onnx"
    info: dict = {}
    if runtime == "ort" or not fp32.is_file():
        result = export_onnx(model, fp32, x, batch=len(x), threads=threads, fold=False, exporter=exporter)
        info.update(onnx_max_abs_diff=result.max_abs_diff, onnx_max_abs_logit=result.max_abs_output,
                    onnx_size_bytes=result.size_bytes)
    info["onnx_exporter"] = exporter
    path = fp32
    if runtime == "ort-int8":
        from attnreuse.quantize import quantize_onnx

        path = quantize_onnx(fp32, work_dir / "model.int8.onnx", mode=int8_mode, calib_images=calib_images)
        info.update(int8_mode=int8_mode, onnx_size_bytes=path.stat().st_size)
    session = ort_session(path, threads=threads)
    feed = {INPUT_NAME: x.numpy()}
    return (lambda: session.run(None, feed)), info
