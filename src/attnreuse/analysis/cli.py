"""`attnreuse analyze`: attention similarity across heads and layers, heatmaps, a suggested plan."""

from __future__ import annotations

import argparse
import json

from attnreuse._cli_args import add_config_args, config_from_args
from attnreuse._rundir import claim_output
from attnreuse.analysis.config import AnalyzeConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="measure how alike attention maps are across heads and layers; suggest a plan",
        description="Cosine similarity of attention maps between heads and layers, CKA of attention "
        "outputs between layers (SkipAt), heatmaps (PNG), a JSON of the matrices and a suggested "
        "attn_plan for a MAC budget. Works on timm ViT/DeiT and attnreuse ViT models.",
    )
    add_config_args(p, AnalyzeConfig)
    p.add_argument("--force", action="store_true", help="replace an analysis or run already in --output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnreuse.analysis.report import analyze

    config = config_from_args(AnalyzeConfig, args)
    reads = (("--checkpoint", config.checkpoint), ("--data", config.data))
    with claim_output(config.output, force=args.force, reads=reads):
        result = analyze(config)
    s = result["suggestion"]
    asked = config.batches * config.batch_size
    fewer = f" (all there are; --batches x --batch-size asked for {asked})" if result["images"] < asked else ""
    print(
        f"{result['model']} on {result['images']} images{fewer}: mean head cosine {result['summary']['mean_head_cosine']:.3f}, mean adjacent-layer "
        f"map cosine {result['summary']['mean_adjacent_map_cosine']:.3f}, adjacent output CKA "
        f"{result['summary']['mean_adjacent_output_cka']:.3f}"
    )
    if s["plan"] is None:
        print(f"no plan suggested: {s['reason']} -> {config.output}")
    else:
        print(f"suggested plan {json.dumps(s['plan'])}: {100 * s['predicted_saving']:.1f}% fewer MACs "
              f"(budget {'met' if s['budget_met'] else 'NOT met'}) -> {config.output}")
    return 0
