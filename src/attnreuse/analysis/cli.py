"""`attnreuse analyze`: attention similarity across heads and layers, heatmaps, a suggested plan."""

from __future__ import annotations

import argparse
import json

from attnreuse._cli_args import MergeKwargs, kwargs_item
from attnreuse._rundir import claim_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="measure how alike attention maps are across heads and layers; suggest a plan",
        description="Cosine similarity of attention maps between heads and layers, CKA of attention "
        "outputs between layers (SkipAt), heatmaps (PNG), a JSON of the matrices and a suggested "
        "attn_plan for a MAC budget. Works on timm ViT/DeiT and attnreuse ViT models.",
    )
    p.add_argument("--model", help="model name (default with a train/convert directory: its model)")
    p.add_argument("--model-kwargs", type=kwargs_item, nargs="+", action=MergeKwargs, default={}, help="keyword arguments (key=value ... or one JSON object) for the model")
    p.add_argument("--checkpoint", help="weights: a train/convert output directory or a .safetensors file")
    p.add_argument("--data", default="digits", help="'digits' (default), an ImageFolder directory or torchvision:NAME:ROOT")
    p.add_argument("--batches", type=int, default=2, help="validation batches to measure on")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mac-budget", type=float, default=0.8, help="plan MACs as a fraction of the all-mha model's")
    p.add_argument("--min-score", type=float, default=0.5, help="least similarity a suggested change needs")
    p.add_argument("--head-threshold", type=float, default=0.9, help="cosine for heads to be grouped onto one map")
    p.add_argument("--output", required=True, help="directory for similarity.json and the heatmaps")
    p.add_argument("--force", action="store_true", help="replace an analysis or run already in --output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.analysis.report import AnalyzeConfig, analyze

    config = AnalyzeConfig(
        model=args.model, model_kwargs=args.model_kwargs, checkpoint=args.checkpoint, data=args.data,
        batches=args.batches, batch_size=args.batch_size, mac_budget=args.mac_budget, min_score=args.min_score,
        head_threshold=args.head_threshold, output=args.output,
    )
    with claim_output(args.output, force=args.force):
        result = analyze(config)
    s = result["suggestion"]
    print(
        f"{result['model']}: mean head cosine {result['summary']['mean_head_cosine']:.3f}, mean adjacent-layer "
        f"map cosine {result['summary']['mean_adjacent_map_cosine']:.3f}, adjacent output CKA "
        f"{result['summary']['mean_adjacent_output_cka']:.3f}"
    )
    if s["plan"] is None:
        print(f"no plan suggested: {s['reason']} -> {args.output}")
    else:
        print(f"suggested plan {json.dumps(s['plan'])}: {100 * s['predicted_saving']:.1f}% fewer MACs "
              f"(budget {'met' if s['budget_met'] else 'NOT met'}) -> {args.output}")
    return 0
