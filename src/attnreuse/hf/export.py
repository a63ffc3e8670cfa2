"""A converted (or original) `transformers` encoder to ONNX, checked in ONNX Runtime.

Inputs `input_ids`, `attention_mask` [B, N] (int64) for text models, `input_values` (float32),
`attention_mask` [B, L] (int64, sample mask) for wav2vec2-style speech models, `input_features`
[B, mel bins, 2P] (float32) alone for Whisper (its encoder reads no mask), `pixel_values`
[B, 3, S, S] (float32) alone for vision models; batch dynamic, and the length too except for
Whisper (its encoder takes exactly 2 x max_source_positions mel frames) and images; output
`last_hidden_state` [B, N, C] (N frames for speech, patches and prefix tokens for images). Exported with the TorchScript-based exporter on the "dense"
attention backend (one matmul-softmax-matmul per map, no Python tile loop in the graph). The file is
written atomically and only when ONNX Runtime agrees with PyTorch on padded text: the largest
difference relative to the largest |output| (real positions) must be at most `rtol`.

`fused_attention` ("mha" or "attention", `onnx_fuse.FUSED_OPS`): rewrite each attention subgraph
(map, key padding mask and A.V) into that fused ONNX Runtime operator before the check, so the
fused graph is the one checked and written; a layer applying another layer's map (`share`), and the
layer whose map it applies, stay decomposed.

`int8`: after that check, quantise the graph with ONNX Runtime's dynamic int8 (weights int8 with
one scale per output channel, activations quantised at run time; `attnreuse.quantize`) and write
it instead, only if every sequence's mean-pooled output (real positions) keeps a cosine of at least
`min_cosine` to PyTorch's float32 one: int8 cannot meet `rtol`, and pooled embeddings are what a
text encoder's users compare. With both: the decomposed float32 graph is quantised and the int8
graph then fused (dynamic int8 leaves the attention's two activation MatMuls in float32, so the same
subgraphs fuse). ONNX Runtime's quantiser cannot take the fused graph itself: its pre-processing
loses the tensor types after `MultiHeadAttention`, and it reads ONNX `Attention` as its own
com.microsoft `Attention` and writes an invalid QAttention.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attnreuse._io import atomic_path

__all__ = ["HFExportResult", "OrtEncoder", "export_encoder", "input_names", "int8_fidelity", "ort_encoder_session",
           "pooled_cosine"]

OUTPUT = "last_hidden_state"


_FIRST = ("input_values", "input_features", "input_ids", "pixel_values")
_UNMASKED = ("input_features", "pixel_values")  # inputs of one fixed length: no mask in the graph


def input_names(batch: dict) -> tuple[str, ...]:
    """The graph's inputs for `batch`: input_ids or input_values, then attention_mask; Whisper's
    input_features alone (its encoder does not read a mask, so the exported graph has none), and
    a vision encoder's pixel_values alone (every image makes the same tokens)."""
    first = next(k for k in _FIRST if k in batch)
    return (first,) if first in _UNMASKED else (first, "attention_mask")


def _dynamic_axes(names: tuple[str, ...]) -> dict:
    """Batch dynamic everywhere; length too, but for fixed-length inputs (Whisper's mel frames,
    images) and their outputs."""
    if names[0] in _UNMASKED:
        return {name: {0: "batch"} for name in (*names, OUTPUT)}
    length = "samples" if names[0] == "input_values" else "tokens"
    return {**{name: {0: "batch", 1: length} for name in names}, OUTPUT: {0: "batch", 1: "tokens"}}


@dataclass(frozen=True)
class HFExportResult:
    path: str
    size_bytes: int
    max_abs_diff: float
    max_abs_output: float
    fused_attention: str | None = None  # the operator attention was rewritten into, if any
    fused_attention_nodes: int = 0  # attention subgraphs rewritten into it
    int8: bool = False  # dynamic int8 (then max_abs_diff compares the float32 graph; int8_min_cosine the int8 one)
    int8_min_cosine: float | None = None  # the lowest pooled-output cosine to PyTorch over the check batch
    float32: HFExportResult | None = None  # int8 with `float32_path`: the checked float32 graph kept there

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_output, 1e-12)


class _Encoder(nn.Module):
    """(input_ids / input_values / input_features / pixel_values, attention_mask) -> last_hidden_state: the graph's
    signature, without dict outputs."""

    def __init__(self, model: nn.Module, first: str = "input_ids") -> None:
        super().__init__()
        self.model = model
        self.first = first

    def forward(self, inputs, attention_mask=None):
        mask = {} if attention_mask is None else {"attention_mask": attention_mask}
        return self.model(**{self.first: inputs}, **mask).last_hidden_state


def ort_encoder_session(path: str | os.PathLike, *, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OrtEncoder:
    """An exported encoder's ONNX Runtime session, called like its `transformers` model where
    `attnreuse.hf.fidelity.embed` calls one: `enc(**batch)` -> `.last_hidden_state` [B, N, C].
    Anything else (`config`, a speech model's frame-length rule) is read from `model`, the
    PyTorch model it was exported from."""

    def __init__(self, path: str | os.PathLike, model: nn.Module, *, threads: int = 2) -> None:
        self.session = ort_encoder_session(path, threads=threads)
        self.model = model
        self.names = [i.name for i in self.session.get_inputs()]

    def __getattr__(self, name: str):
        if name in ("session", "model", "names", "module"):  # not set yet, or DistributedDataParallel's
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, output_hidden_states: bool = False, **batch):
        from types import SimpleNamespace

        out = self.session.run(None, {k: batch[k].numpy() for k in self.names})[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(out), hidden_states=None, logits=None)


def int8_fidelity(model: nn.Module, reference: tuple, tokenizer, texts: list[str], workdir: str | os.PathLike,
                  *, threads: int = 2, exported: str | os.PathLike | None = None) -> dict:
    """`attnreuse.hf.fidelity.fidelity` of `model`'s dynamic int8 export against `reference` (the
    original's `embed` of `texts`: texts, or clips with the clip batcher as `tokenizer`): what
    deploying the int8 graph keeps. `exported`: that graph, already written by `export_encoder(...,
    int8=True)` (batch and length are dynamic, so any batch it was checked on will do); else it is
    exported into `workdir` and removed after."""
    from attnreuse.hf.fidelity import batches, fidelity

    if exported is not None:
        return fidelity(OrtEncoder(exported, model, threads=threads), reference, tokenizer, texts)
    path = Path(workdir) / "int8_fidelity.onnx"
    check = next(batches(tokenizer, texts[:8], 8, 64))  # several lengths: the export's own check runs with padding
    export_encoder(model, path, check, threads=threads, int8=True, min_cosine=-1.0)
    try:
        return fidelity(OrtEncoder(path, model, threads=threads), reference, tokenizer, texts)
    finally:
        path.unlink(missing_ok=True)


def pooled_cosine(got: torch.Tensor, expected: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B] cosine between the mean over real positions of `got` and of `expected` ([B, N, C]; real: [B, N])."""
    from attnreuse.hf.fidelity import mean_pool

    return torch.cosine_similarity(mean_pool(got.to(expected.dtype), real), mean_pool(expected, real), dim=-1)


def _drop_length_caches(model: nn.Module) -> None:
    """Empty the caches some position embeddings keep for the last sequence length they saw
    (Wav2Vec2-Conformer's rotary embedding: `cached_sequence_length`). A trace taken while one is
    full records the cached tensor as a constant, and the exported graph then takes only the
    export's length; emptied, the trace records how the embedding is computed from the length."""
    for module in model.modules():
        if getattr(module, "cached_sequence_length", None) is not None:
            module.cached_sequence_length = None
            if hasattr(module, "cached_rotary_positional_embedding"):
                module.cached_rotary_positional_embedding = None


def export_encoder(model: nn.Module, path: str | os.PathLike, batch: dict, *, opset: int = 17,
                   rtol: float = 1e-4, threads: int = 2, fused_attention: str | None = None,
                   int8: bool = False, min_cosine: float = 0.98,
                   float32_path: str | os.PathLike | None = None) -> HFExportResult:
    """Export `model` to `path` and check it on `batch` (a tokenizer's or waveform batcher's output with padding).
    `float32_path` (with int8): also keep the checked float32 graph, fused alike, there (the result's
    `float32`), which the int8 graph is made from anyway: one export for both."""
    from attnreuse.hf.fidelity import real_positions
    from attnreuse.onnx_fuse import FUSED_OPS, fuse_file
    from attnreuse.ops import exporting

    if fused_attention is not None and fused_attention not in FUSED_OPS:
        raise ValueError(f"--fused-attention must be one of {', '.join(FUSED_OPS)}, got {fused_attention!r}")
    if isinstance(min_cosine, bool) or not isinstance(min_cosine, (int, float)) or not -1.0 <= min_cosine <= 1.0:
        raise ValueError(f"--min-cosine must be a number in [-1, 1], got {min_cosine!r}")
    if float32_path is not None and (not int8 or Path(float32_path).resolve() == Path(path).resolve()):
        raise ValueError(f"float32_path keeps the float32 graph of an int8 export beside it at another path; got "
                         f"{float32_path!r} with int8={int8} and path {path!r}")

    model = model.eval()
    names = input_names(batch)
    # eval() on the wrapper too: torch.onnx.export restores the wrapper's own mode when it is done,
    # and a fresh nn.Module is in training mode, which would switch the model's dropout back on.
    wrapper = _Encoder(model, names[0]).eval()
    args = tuple(batch[k] for k in names)
    with torch.no_grad():
        expected = wrapper(*args)
    axes = _dynamic_axes(names)
    _drop_length_caches(model)  # after the eager call above, which fills them
    with atomic_path(path) as tmp:
        with torch.no_grad(), exporting(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(wrapper, args, str(tmp), input_names=list(names), output_names=[OUTPUT],
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
            except torch.onnx.errors.OnnxExporterError as err:  # an operator ONNX has no form for
                raise ValueError(f"{type(model).__name__} cannot be exported to ONNX: {str(err).splitlines()[0]}") from None
        plain = Path(tmp).with_name(Path(tmp).name + ".plain.onnx")  # the decomposed graph int8 starts from
        kept = Path(tmp).with_name(Path(tmp).name + ".float32.onnx")  # float32_path's graph until int8 passed
        try:
            if fused_attention is not None and int8:
                shutil.copyfile(tmp, plain)
            fused = fuse_file(tmp, fused_attention) if fused_attention is not None else 0
            session = ort_encoder_session(tmp, threads=threads)
            got = torch.from_numpy(session.run(None, {k: batch[k].numpy() for k in names})[0])
            real = real_positions(model, batch, expected.shape[1]).bool()
            diff = float((got - expected)[real].abs().max())
            scale = float(expected[real].abs().max())
            if not diff <= rtol * scale:
                raise ValueError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (output scale {scale:.3g}), above "
                                 f"rtol {rtol:g}; nothing written to {path}")
            worst, float32 = None, None
            if float32_path is not None:  # a copy: the int8 graph replaces tmp; written once that passed its check
                shutil.copyfile(tmp, kept)
                float32 = HFExportResult(str(float32_path), kept.stat().st_size, diff, scale, fused_attention, fused)
            if int8:
                source = plain if fused_attention is not None else Path(tmp)
                worst, fused = _quantize_checked(tmp, source, fused_attention, batch, names, expected, real, threads,
                                                 min_cosine, path)
            if float32_path is not None:
                with atomic_path(float32_path) as keep:
                    shutil.move(kept, keep)
        finally:
            plain.unlink(missing_ok=True)
            kept.unlink(missing_ok=True)
        size = Path(tmp).stat().st_size
    return HFExportResult(str(path), size, diff, scale, fused_attention, fused, int8, worst, float32)


def _quantize_checked(tmp: Path, source: Path, fused_attention: str | None, batch: dict, names, expected, real,
                      threads: int, min_cosine: float, path) -> tuple[float, int]:
    """Replace the checked float32 graph at `tmp` with the dynamic int8 form of `source` (the
    decomposed float32 graph), its attention then fused into `fused_attention` when given, if every
    sequence's pooled output keeps a cosine >= min_cosine to PyTorch's; returns (the lowest cosine,
    the attention subgraphs fused in the int8 graph)."""
    from attnreuse.onnx_fuse import fuse_file
    from attnreuse.quantize import quantize_onnx

    q = Path(tmp).with_name(Path(tmp).name + ".int8.onnx")
    try:
        quantize_onnx(source, q, mode="dynamic", per_channel=True)
        fused = fuse_file(q, fused_attention) if fused_attention is not None else 0
        got = torch.from_numpy(ort_encoder_session(q, threads=threads).run(None, {k: batch[k].numpy() for k in names})[0])
        worst = float(pooled_cosine(got, expected, real).min())
        if not worst >= min_cosine:
            raise ValueError(f"the int8 graph's pooled output has cosine {worst:.4f} to PyTorch's on a check sequence, "
                             f"below --min-cosine {min_cosine:g}; nothing written to {path}")
        os.replace(q, tmp)
    finally:
        q.unlink(missing_ok=True)
    return worst, fused
