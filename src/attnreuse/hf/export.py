"""A converted (or original) `transformers` encoder to ONNX, checked in ONNX Runtime.

Inputs `input_ids`, `attention_mask` [B, N] (int64, batch and length dynamic); output
`last_hidden_state` [B, N, C]. Exported with the TorchScript-based exporter on the "dense"
attention backend (one matmul-softmax-matmul per map, no Python tile loop in the graph). The file is
written atomically and only when ONNX Runtime agrees with PyTorch on padded text: the largest
difference relative to the largest |output| must be at most `rtol`.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attnreuse._io import atomic_path

__all__ = ["HFExportResult", "export_encoder", "ort_encoder_session"]

INPUTS, OUTPUT = ("input_ids", "attention_mask"), "last_hidden_state"


@dataclass(frozen=True)
class HFExportResult:
    path: str
    size_bytes: int
    max_abs_diff: float
    max_abs_output: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_output, 1e-12)


class _Encoder(nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state: the graph's signature, without dict outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def ort_encoder_session(path: str | os.PathLike, *, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def export_encoder(model: nn.Module, path: str | os.PathLike, batch: dict, *, opset: int = 17,
                   rtol: float = 1e-4, threads: int = 2) -> HFExportResult:
    """Export `model` to `path` and check it on `batch` (a tokenizer's output with padding)."""
    from attnreuse.ops import exporting

    model = model.eval()
    # eval() on the wrapper too: torch.onnx.export restores the wrapper's own mode when it is done,
    # and a fresh nn.Module is in training mode, which would switch the model's dropout back on.
    wrapper = _Encoder(model).eval()
    args = tuple(batch[k] for k in INPUTS)
    with torch.no_grad():
        expected = wrapper(*args)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, OUTPUT)}
    with atomic_path(path) as tmp:
        with torch.no_grad(), exporting(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(tmp), input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        session = ort_encoder_session(tmp, threads=threads)
        got = torch.from_numpy(session.run(None, {k: batch[k].numpy() for k in INPUTS})[0])
        real = batch["attention_mask"].bool()
        diff = float((got - expected)[real].abs().max())
        scale = float(expected[real].abs().max())
        if not diff <= rtol * scale:
            raise ValueError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (output scale {scale:.3g}), above "
                             f"rtol {rtol:g}; nothing written to {path}")
        size = Path(tmp).stat().st_size
    return HFExportResult(str(path), size, diff, scale)
