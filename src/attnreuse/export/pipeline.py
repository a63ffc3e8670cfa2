"""`attnreuse export` as a function: one frozen config in, ONNX file(s) and a JSON record out.

Outputs for `--output model.onnx`: `model.onnx` (fp32, checked in ONNX Runtime), with `int8`
also `model.int8.onnx`, and `model.export.json` (the config, parity, sizes, int8 comparison and
the machine), each written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from attnreuse._cli_args import arg
from attnreuse.deploy import DEFAULT_EXPORTER, EXPORTERS

__all__ = ["ExportConfig", "export_command", "int8_path", "record_path", "run_export"]


def _positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


@dataclass(frozen=True)
class ExportConfig:
    model: str = arg(help="model name (any name timm knows once attnreuse is imported), e.g. uniform_s",
                     positional=True)
    output: str = arg(help="the fp32 .onnx file to write", flags=("--output", "-o"))
    model_kwargs: dict = arg(help='model arguments (key=value ... or one JSON object), e.g. \'{"attn_plan": "taylor"}\'',
                             default_factory=dict)
    checkpoint: str | None = arg(None, "state dict file (torch or safetensors) or train run directory, loaded strictly")
    num_classes: int | None = arg(None, "classifier width (None: the checkpoint's, else the model's)")
    img_size: int | None = arg(None, "input resolution (None: the model's pretrained_cfg input size)")
    batch: int = arg(1, "exported batch size (with --dynamic-batch: the example batch)")
    dynamic_batch: bool = arg(False, "make the batch dimension dynamic")
    opset: int = arg(18, "ONNX opset")
    exporter: str = arg(DEFAULT_EXPORTER, "torch.onnx exporter (torchscript: faster export, smaller graph; "
                        "dynamo: torch.export based)", choices=EXPORTERS)
    atol: float = arg(1e-4, "parity tolerance: max abs logit difference ONNX Runtime vs PyTorch")
    check_images: int = arg(16, "digits test images for the parity check")
    int8: bool = arg(False, "also write FILE.int8.onnx (dynamic quantization; static with --calib)")
    calib: str | None = arg(None, "'digits' or an ImageFolder: static int8 calibrated on it")
    calib_images: int = arg(64, "calibration images")
    eval_data: str = arg("digits", "'digits' (test split) or an ImageFolder for int8 top-1 agreement")
    eval_images: int | None = arg(None, "images of eval_data for int8 agreement (None: all)")
    threads: int = arg(2, "ONNX Runtime intra-op threads for checks and timings")
    # Off by default: parity held on every plan tested, but on ViT-S/16 at 224 under ORT (2026-11-30,
    # AMD EPYC, 1 thread, a shared machine: rough) paired rounds found no speed difference. With int8
    # (dynamic), the decomposed graph is quantised and the int8 graph fused; static int8 puts its
    # quantise/dequantise pairs on the attention's activations, which the fused ops do not take.
    fused_attention: str | None = arg(
        None, "rewrite each attention into one fused ONNX Runtime op: mha = com.microsoft "
        "MultiHeadAttention, attention = ONNX Attention (opset 23); not given: keep MatMul/Softmax/MatMul "
        "(static int8, --calib, needs that)", choices=("mha", "attention"))

    def __post_init__(self) -> None:
        for name in ("model", "output"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict (JSON object), got {self.model_kwargs!r}")
        if not self.output.endswith(".onnx"):
            raise ValueError(f"output must name a .onnx file, got {self.output!r}")
        for name in ("batch", "opset", "check_images", "calib_images", "threads"):
            _positive_int(name, getattr(self, name))
        for name in ("num_classes", "img_size", "eval_images"):
            _positive_int(name, getattr(self, name), allow_none=True)
        if self.fused_attention is not None:
            from attnreuse.onnx_fuse import FUSED_OPS

            if self.fused_attention not in FUSED_OPS:
                raise ValueError(f"fused_attention must be one of {FUSED_OPS} or None, got {self.fused_attention!r}")
        if self.fused_attention is not None and self.calib is not None:
            raise ValueError(
                "static int8 (--calib) quantises the attention's activations, which the fused attention ops do "
                "not take; drop --calib for dynamic int8, or drop --fused-attention"
            )
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if isinstance(self.atol, bool) or not isinstance(self.atol, (int, float)) or not self.atol > 0:
            raise ValueError(f"atol must be a positive number, got {self.atol!r}")
        if self.check_images < self.batch:
            raise ValueError(f"check_images must be >= batch={self.batch}, got {self.check_images}")
        if self.calib is not None and not self.int8:
            raise ValueError(f"calib={self.calib!r} calibrates int8 quantization: add int8=True (--int8)")
        for name in ("calib", "eval_data"):
            value = getattr(self, name)
            if value is not None and value != "digits" and not Path(value).is_dir():
                raise ValueError(f"{name} must be 'digits' or an ImageFolder directory, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def export_command(config: ExportConfig) -> str:
    """The `attnreuse export ...` command line that repeats `config`."""
    import json
    import shlex

    argv = ["attnreuse", "export", config.model, "--output", config.output]
    defaults = ExportConfig(model=config.model, output=config.output)
    for f in dataclasses.fields(ExportConfig):  # every flag is a field (the CLI is generated from them)
        value, flag = getattr(config, f.name), "--" + f.name.replace("_", "-")
        if f.name in ("model", "output") or value == getattr(defaults, f.name):
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


def int8_path(output: str | os.PathLike) -> Path:
    """model.onnx -> model.int8.onnx"""
    return Path(output).with_suffix(".int8.onnx")


def record_path(output: str | os.PathLike) -> Path:
    """model.onnx -> model.export.json"""
    return Path(output).with_suffix(".export.json")


def _check_writable(path: Path) -> None:
    """Fail before any work when `path` cannot be written (a directory, or no permission)."""
    if path.is_dir():
        raise ValueError(f"output {str(path)!r} is a directory; give a .onnx file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ValueError(f"output {str(path)!r} cannot be written: {err.strerror} ({parent})") from err


def run_export(config: ExportConfig) -> dict:
    """Export (and optionally quantise) `config.model`; returns the record also written to JSON."""
    from attnreuse._io import atomic_write_json
    from attnreuse.measure import machine_record
    from attnreuse.data import load_images
    from attnreuse.deploy import create_export_model, export_onnx, input_spec
    from attnreuse.quantize import compare_int8

    out = Path(config.output)
    _check_writable(out)
    model = create_export_model(
        config.model,
        checkpoint=config.checkpoint,
        img_size=config.img_size,
        num_classes=config.num_classes,
        model_kwargs=config.model_kwargs,
    )
    chans, height, width = input_spec(model, config.img_size)
    if height != width:
        raise ValueError(f"{config.model} expects a {height}x{width} input; square inputs only (set img_size)")
    cfg = model.pretrained_cfg
    norm = dict(img_size=height, in_chans=chans, mean=cfg.get("mean", (0.5,) * 3), std=cfg.get("std", (0.5,) * 3))
    check_x, _ = load_images("digits", "test", limit=config.check_images, **norm)
    if config.int8:  # read before any file is written: an unusable --calib/--eval-data leaves no .onnx behind
        calib_x = None
        if config.calib is not None:
            calib_x, _ = load_images(config.calib, "train", limit=config.calib_images, **norm)
        eval_x, eval_y = load_images(config.eval_data, "test", limit=config.eval_images, **norm)
    mode = "static" if config.calib else "dynamic"
    work = tempfile.TemporaryDirectory(prefix="attnreuse-export-")
    # int8 with fused attention quantises the graph as exported, before the fusing (see _quantize)
    plain = Path(work.name) / "plain.onnx" if config.int8 and config.fused_attention else None
    with work:
        result = export_onnx(
            model,
            out,
            check_x,
            opset=config.opset,
            dynamic_batch=config.dynamic_batch,
            exporter=config.exporter,
            batch=config.batch,
            atol=config.atol,
            threads=config.threads,
            fused_attention=config.fused_attention,
            plain_path=plain,
        )
        if config.int8:
            q_path, fused = _quantize(out, config, mode, calib_x, plain)
    record: dict = {
        "config": config.to_dict(),
        "command": export_command(config),
        "machine": machine_record(threads=config.threads),
        "onnx": dataclasses.asdict(result),
        "max_abs_logit": result.max_abs_output,
        "input_shape": [config.batch, chans, height, width],
    }
    if config.int8:
        record["int8"] = {
            "path": str(q_path),
            "mode": mode,
            **({"fused_attention_nodes": fused} if config.fused_attention else {}),
            **compare_int8(out, q_path, eval_x, eval_y, threads=config.threads),
        }
    atomic_write_json(record_path(out), record)
    return record


def _quantize(out: Path, config: ExportConfig, mode: str, calib_x, plain: Path | None) -> tuple[Path, int]:
    """(FILE.int8.onnx, attention subgraphs fused in it). The fp32 file at `out` is quantised; with
    fused attention, ONNX Runtime's quantiser cannot take that graph (tensor types lost after
    MultiHeadAttention; ONNX `Attention` taken for its own com.microsoft one), so `plain`, the same
    export before its attention was fused (kept and checked by `export_onnx(plain_path=)`), is
    quantised and the int8 graph fused (dynamic int8 leaves the attention's activation MatMuls in
    float32: the same subgraphs fuse)."""
    from attnreuse._io import atomic_path
    from attnreuse.onnx_fuse import fuse_file
    from attnreuse.quantize import quantize_onnx

    if config.fused_attention is None:
        return quantize_onnx(out, int8_path(out), mode=mode, calib_images=calib_x), 0
    with atomic_path(int8_path(out)) as tmp:
        quantize_onnx(plain, tmp, mode=mode, calib_images=calib_x)
        fused = fuse_file(tmp, config.fused_attention)
    return int8_path(out), fused
