"""Any registered model (attnreuse or timm) to ONNX, checked in ONNX Runtime against PyTorch.

Part of the shared floor: the `export` tool writes files with it and `bench models` times the
same files in ONNX Runtime, so neither tool imports the other.

The model is put in eval mode and folded for deployment first (`model.fuse()` where the model
has one, e.g. UniForm's ConvBN pairs; timm's `reparameterize_model` otherwise, e.g. FastViT).
Attention runs on the "dense" backend while exporting: one matmul-softmax-matmul graph that
ONNX Runtime fuses, with no Python loop over row tiles baked into the graph for one batch size.
The file is written through `atomic_path`: a failed export or parity check leaves nothing behind.

Exporters: both of torch.onnx's export every attention path (softmax reuse, map sharing, SkipAt,
Taylor; see tests/export). The TorchScript-based one is the default: on efficientvit_m0 it
exported in 1.3 s against 18 s for the torch.export-based ("dynamo") one, with a 6.1 MB file
against 10.2 MB (BatchNorms folded) and ONNX Runtime latency no worse. Torch marks it deprecated;
"dynamo" is one flag away (`exporter="dynamo"`, opset >= 18).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnreuse._io import atomic_path

__all__ = [
    "DEFAULT_EXPORTER",
    "EXPORTERS",
    "ExportResult",
    "create_export_model",
    "deploy_model",
    "export_onnx",
    "input_spec",
    "ort_session",
    "run_ort",
]

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "torchscript"  # see the module docstring; `attnreuse export --exporter` defaults to it too
OPSET_RANGE = {"dynamo": (18, 23), "torchscript": (9, 20)}
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class ExportResult:
    path: str
    size_bytes: int
    max_abs_diff: float  # ONNX Runtime vs eager PyTorch (before folding) on the check inputs
    checked_images: int
    max_abs_output: float  # the largest |eager output| on them: the scale max_abs_diff is read against
    fused_attention: str | None = None  # the fused operator attention was rewritten into (onnx_fuse)
    fused_attention_nodes: int = 0  # how many attention subgraphs it replaced


def _read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A checkpoint file as a flat state dict (safetensors or torch; `state_dict`/`model` wrappers)."""
    from timm.models import load_state_dict

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return load_state_dict(str(path))
    except Exception as err:  # any unreadable file: a pickle, zip or safetensors error
        raise ValueError(f"checkpoint {str(path)!r} could not be read as a state dict: {err}") from err


def _read_run_dir(run_dir: Path, name: str) -> tuple[dict[str, Tensor], dict]:
    """The latest weights of an `attnreuse train`/`convert` output directory and the model
    arguments it was built with (its model.json, plus img_size from its config.json)."""
    from attnreuse._io import read_json
    from attnreuse.runs import MODEL_JSON, load_weights, read_model_spec

    spec = read_model_spec(run_dir)
    if spec is None:
        raise ValueError(f"checkpoint directory {str(run_dir)!r} is not a train/convert output (no {MODEL_JSON})")
    if spec["name"] != name:
        raise ValueError(f"checkpoint directory {str(run_dir)!r} holds a {spec['name']!r}, not a {name!r}")
    kwargs = dict(spec["kwargs"])
    config_path = run_dir / "config.json"
    if "img_size" not in kwargs and config_path.is_file():
        saved = read_json(config_path)
        img_size = saved.get("img_size") if isinstance(saved, dict) else None
        if img_size:
            kwargs["img_size"] = img_size
    return load_weights(run_dir), kwargs


def _classes_in(state: dict[str, Tensor], classifier: str | None) -> int | None:
    weight = state.get(f"{classifier}.weight") if classifier else None
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def create_export_model(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
) -> nn.Module:
    """`timm.create_model(name, **model_kwargs)` in eval mode, weights from `checkpoint` (strict).

    `checkpoint`: a state dict file, or an `attnreuse train` output directory (whose model.json
    arguments and img_size are used). `num_classes` defaults to the checkpoint's classifier width;
    `img_size` is passed to models that take it (the others take any size at run time) and
    recorded as `pretrained_cfg["input_size"]`.
    """
    import timm

    from attnreuse.models import check_model_name

    check_model_name(name)
    kwargs = dict(model_kwargs or {})
    state = None
    if checkpoint is not None and Path(checkpoint).is_dir():
        state, run_kwargs = _read_run_dir(Path(checkpoint), name)
        kwargs = {**run_kwargs, **kwargs}
        img_size = img_size or kwargs.pop("img_size", None)
    elif checkpoint is not None:
        state = _read_state_dict(checkpoint)
    if num_classes is None and state is not None:
        cfg = timm.models.get_pretrained_cfg(name)
        num_classes = _classes_in(state, getattr(cfg, "classifier", None) if cfg else None)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, **kwargs, **({"img_size": img_size} if img_size else {}))
    except TypeError as err:
        if not img_size or "img_size" not in str(err):
            raise
        model = timm.create_model(name, **kwargs)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            from attnreuse.runs import state_dict_mismatch

            raise ValueError(f"checkpoint {str(checkpoint)!r} does not fit model {name!r} "
                             f"({state_dict_mismatch(err)})") from None
    if img_size:
        # record the resolution it was built for (a copy: timm's registry entry stays as it was)
        chans = model.pretrained_cfg.get("input_size", (3,))[0]
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (chans, img_size, img_size)}
    return model.eval()


def input_spec(model: nn.Module, img_size: int | None = None) -> tuple[int, int, int]:
    """(channels, height, width) the model expects: its pretrained_cfg, resized to img_size."""
    chans, height, width = getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))
    return (chans, img_size, img_size) if img_size else (chans, height, width)


def deploy_model(model: nn.Module) -> nn.Module:
    """Eval mode, ConvBN pairs folded: `model.fuse()` where defined, else timm's re-parameterisation."""
    model = model.eval()
    if callable(getattr(model, "fuse", None)):
        fused = model.fuse()
        return (fused if isinstance(fused, nn.Module) else model).eval()
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model).eval()


def ort_session(path: str | Path, *, threads: int = 2):
    """An ONNX Runtime CPU session pinned to `threads` intra-op threads, all graph optimisations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_ort(session, images: Tensor, *, batch: int | None = None) -> Tensor:
    """Logits [N, classes] of `images` [N, C, H, W], `batch` at a time (None: the session's fixed
    batch, or all at once when its batch is dynamic)."""
    import numpy as np

    fixed = session.get_inputs()[0].shape[0]
    step = batch or (fixed if isinstance(fixed, int) else len(images))
    outs = [
        session.run(None, {INPUT_NAME: images[i : i + step].numpy()})[0]
        for i in range(0, len(images), step)
    ]
    return torch.from_numpy(np.concatenate(outs))


def _export_graph(
    model: nn.Module, example: Tensor, path: Path, *, opset: int, dynamic_batch: bool, exporter: str
) -> None:
    from attnreuse.ops import exporting

    kwargs: dict = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    if exporter == "dynamo":
        kwargs.update(dynamo=True, external_data=False, verbose=False)
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    else:
        kwargs.update(dynamo=False)
        if dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    # The exporters report progress on stdout and warn about the tracer; neither is for the user.
    with torch.no_grad(), exporting(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), **kwargs)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    check_images: Tensor,
    *,
    opset: int = 18,
    dynamic_batch: bool = False,
    exporter: str = DEFAULT_EXPORTER,
    batch: int = 1,
    atol: float = 1e-4,
    threads: int = 2,
    fold: bool = True,
    fused_attention: str | None = None,
    plain_path: str | os.PathLike | None = None,
) -> ExportResult:
    """Fold `model`, export it to `path` with input [batch, C, H, W] and check it in ONNX Runtime.

    `check_images` [N, C, H, W]: real inputs; their eager logits (computed before folding) are
    compared with ONNX Runtime's, `batch` at a time (dynamic batch: also all N at once). `fold`:
    apply `deploy_model` first (False when `model` is already folded). `fused_attention` ("mha" or
    "attention", `onnx_fuse.FUSED_OPS`): rewrite each attention subgraph into that fused ONNX
    Runtime operator before the check; `plain_path` then also keeps the graph as exported, before
    the rewrite, checked the same way (what int8 quantisation takes: one export, not two). Raises
    ValueError when the largest absolute difference exceeds `atol`; then no file is written.
    """
    if fused_attention is not None:
        from attnreuse.onnx_fuse import FUSED_OPS, fuse_file

        if fused_attention not in FUSED_OPS:
            raise ValueError(f"fused_attention must be one of {FUSED_OPS} or None, got {fused_attention!r}")
    if plain_path is not None and fused_attention is None:
        raise ValueError("plain_path keeps the graph before its attention is fused: give fused_attention too")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    low, high = OPSET_RANGE[exporter]
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise ValueError(f"opset for the {exporter} exporter must be an int in [{low}, {high}], got {opset!r}")
    if check_images.ndim != 4 or len(check_images) < batch:
        raise ValueError(
            f"check_images must be [N, C, H, W] with N >= batch={batch}, got {tuple(check_images.shape)}"
        )
    n = len(check_images) - len(check_images) % batch
    images = check_images[:n]
    with torch.no_grad():
        expected = torch.cat([model.eval()(images[i : i + batch]) for i in range(0, n, batch)])
    # the caller's model stays as it was; fold=False: `model` is already `deploy_model`'s output
    deployed = deploy_model(copy.deepcopy(model)) if fold else model.eval()
    keep = atomic_path(plain_path) if plain_path is not None else contextlib.nullcontext()
    with atomic_path(path) as tmp, keep as plain_tmp:
        example = images[:batch]
        if dynamic_batch and batch == 1:
            example = example.repeat(2, 1, 1, 1)  # torch.export specialises a batch of 1 to a constant
        _export_graph(deployed, example, tmp, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter)
        graphs = [tmp]
        if plain_tmp is not None:
            shutil.copyfile(tmp, plain_tmp)
            graphs.append(plain_tmp)
        fused = fuse_file(tmp, fused_attention) if fused_attention is not None else 0
        diffs = []
        for graph in graphs:
            session = ort_session(graph, threads=threads)
            diffs.append((run_ort(session, images, batch=batch) - expected).abs().max().item())
            if dynamic_batch:
                diffs.append((run_ort(session, images) - expected).abs().max().item())
        max_diff = max(diffs)
        if not max_diff <= atol:  # also catches NaN
            raise ValueError(
                f"ONNX Runtime output differs from PyTorch by {max_diff:.3g} (max abs) on {n} images, "
                f"above the tolerance {atol:g}; nothing written to {str(path)!r}"
            )
        size = tmp.stat().st_size
    return ExportResult(path=str(path), size_bytes=size, max_abs_diff=max_diff, checked_images=n,
                        max_abs_output=expected.abs().max().item(), fused_attention=fused_attention,
                        fused_attention_nodes=fused)
