"""`attnreuse export MODEL --output FILE.onnx ...`: ONNX export with a parity check, optional int8."""

from __future__ import annotations

import argparse
import os

from attnreuse._cli_args import add_config_args, config_from_args
from attnreuse.export.pipeline import ExportConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, check it in ONNX Runtime, optionally quantise to int8",
        description="Export any registered model (attnreuse or timm) to ONNX with ConvBN folding, "
        "check ONNX Runtime against PyTorch on digits images, and optionally quantise to int8. "
        "Writes FILE.onnx, FILE.int8.onnx (--int8) and FILE.export.json.",
    )
    add_config_args(p, ExportConfig)
    p.add_argument("--force", action="store_true", help="replace FILE.onnx (and its .int8.onnx, .export.json) if they exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.export.pipeline import int8_path, record_path, run_export

    config = config_from_args(ExportConfig, args)
    written = [config.output, record_path(config.output)] + ([int8_path(config.output)] if config.int8 else [])
    existing = [str(p) for p in written if os.path.isfile(p)]
    if existing and not args.force:
        raise FileExistsError(f"--output {config.output}: {', '.join(existing)} already exist(s); "
                              "pass --force to replace them or choose another name")
    rec = run_export(config)
    onnx = rec["onnx"]
    print(
        f"{config.model} -> {onnx['path']} ({onnx['size_bytes'] / 2**20:.2f} MiB), input "
        f"{'x'.join(map(str, rec['input_shape']))}{' (dynamic batch)' if config.dynamic_batch else ''}, "
        f"opset {config.opset}" + ("; random weights (no --checkpoint)" if config.checkpoint is None else "")
        + (f", {onnx['fused_attention_nodes']} attention(s) fused into {config.fused_attention}" if config.fused_attention else "")
    )
    print(
        f"parity on {onnx['checked_images']} digits images: max abs diff {onnx['max_abs_diff']:.3g} "
        f"(tolerance {config.atol:g}; largest |logit| {rec['max_abs_logit']:.3g})"
    )
    if "int8" in rec:
        q = rec["int8"]
        print(
            f"int8 ({q['mode']}) -> {q['path']}: size {q['int8_size_bytes'] / 2**20:.2f} MiB "
            f"({q['size_ratio']:.2f}x fp32), latency {q['int8_latency_ms_median']:.2f} ms vs "
            f"{q['fp32_latency_ms_median']:.2f} ms fp32 ({q['speedup']:.2f}x; paired over rounds "
            f"{q['speedup_paired']:.2f}x, {q['speedup_paired_range'][0]:.2f}-{q['speedup_paired_range'][1]:.2f}; "
            f"{q['threads']} threads), "
            f"top-1 agreement {100 * q['top1_agreement']:.1f}% on {q['images']} images"
            + (f", {q['fused_attention_nodes']} attention(s) fused" if "fused_attention_nodes" in q else "")
        )
    print(f"record: {record_path(config.output)}")
    return 0
