"""`attnreuse export MODEL --output FILE.onnx ...`: ONNX export with a parity check, optional int8."""

from __future__ import annotations

import argparse

from attnreuse._cli_args import MergeKwargs, kwargs_item


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, check it in ONNX Runtime, optionally quantise to int8",
        description="Export any registered model (attnreuse or timm) to ONNX with ConvBN folding, "
        "check ONNX Runtime against PyTorch on digits images, and optionally quantise to int8. "
        "Writes FILE.onnx, FILE.int8.onnx (--int8) and FILE.export.json.",
    )
    p.add_argument("model", help="model name, e.g. uniform_s or vit_attnreuse_small_patch16_224")
    p.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    p.add_argument("--model-kwargs", type=kwargs_item, nargs="+", action=MergeKwargs, default={},
                   help='JSON object of model arguments, e.g. \'{"attn_plan": "taylor"}\'')
    p.add_argument("--checkpoint", help="state dict file (torch or safetensors), loaded strictly")
    p.add_argument("--num-classes", type=int, help="classifier width (default: the checkpoint's)")
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--batch", type=int, default=1, help="exported batch size (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (default torchscript: faster export, smaller graph)")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance, max abs logit diff")
    p.add_argument("--int8", action="store_true", help="also write FILE.int8.onnx (dynamic quantization)")
    p.add_argument("--calib", help="'digits' or an ImageFolder: static int8 calibrated on it")
    p.add_argument("--calib-images", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--eval-data", default="digits",
                   help="'digits' (test split) or an ImageFolder for int8 top-1 agreement")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    p.add_argument("--fused-attention", choices=("mha", "attention", "none"), default="none",
                   help="rewrite each attention into one fused ONNX Runtime op: mha = com.microsoft "
                   "MultiHeadAttention, attention = ONNX Attention (opset 23), none = keep "
                   "MatMul/Softmax/MatMul (default; int8 needs it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.export.pipeline import ExportConfig, record_path, run_export

    config = ExportConfig(
        model=args.model,
        output=args.output,
        model_kwargs=args.model_kwargs,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        img_size=args.img_size,
        batch=args.batch,
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
        exporter=args.exporter,
        atol=args.atol,
        int8=args.int8,
        calib=args.calib,
        calib_images=args.calib_images,
        eval_data=args.eval_data,
        threads=args.threads,
        fused_attention=None if args.fused_attention == "none" else args.fused_attention,
    )
    rec = run_export(config)
    onnx = rec["onnx"]
    print(
        f"{config.model} -> {onnx['path']} ({onnx['size_bytes'] / 2**20:.2f} MiB), input "
        f"{'x'.join(map(str, rec['input_shape']))}{' (dynamic batch)' if config.dynamic_batch else ''}, "
        f"opset {config.opset}"
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
        )
    print(f"record: {record_path(config.output)}")
    return 0
