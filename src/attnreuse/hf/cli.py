"""`attnreuse hf`: Hugging Face `transformers` encoders, analysed, converted, distilled, evaluated, exported.

    attnreuse hf analyze --model DIR --output runs/minilm-analysis
    attnreuse hf convert --model DIR --plan mha,mha,share,mha,share,mha --output runs/minilm-share
    attnreuse hf distill --teacher DIR --init runs/minilm-share --output runs/minilm-share-ft
    attnreuse hf eval --teacher DIR runs/minilm-share runs/minilm-share-ft --json eval.json
    attnreuse hf export runs/minilm-share-ft --output minilm-share.onnx --fused-attention mha

DIR is a local `transformers` model directory (config.json, weights, tokenizer); nothing is downloaded.
Speech encoders (wav2vec2, HuBERT and the like: raw waveforms; Whisper's encoder: log-mel frames, padded to its
one input length) read seeded synthetic clips (`attnreuse.hf.audio`), and `--tokens` /
`--max-length` count encoder frames. Vision encoders (ViT, DeiT, DINOv2, CLIP / SigLIP image towers)
read `--data digits` (built in) or a directory of images (`attnreuse.hf.images`).
"""

from __future__ import annotations

import argparse
import re

from attnreuse._cli_args import add_config_args, config_from_args, csv_list
from attnreuse.hf.config import EVAL_TIMING, SUGGESTED_KINDS

TEXT_HELP = ("the data (--data is the same flag): text models: 'stdlib' (built-in: the docstrings of Python's standard "
             "library) or a UTF-8 file, one text per line; vision models (ViT, DeiT, DINOv2, ...): 'digits' (built-in, "
             "the default) or a directory of images; speech models (wav2vec2, HuBERT, Whisper, ...) read the built-in "
             "synthetic clips (leave it out)")


class _DataFlag(argparse.Action):
    """--text / --data, one flag with two names: records the name typed (`data_flag`)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.data_flag = option_string


def _naming_typed_flag(job):
    """`job`, whose one-line errors name the data flag as the user typed it (--text or --data):
    the jobs below name it by the model's kind."""
    def run(args) -> int:
        try:
            return job(args)
        except (ValueError, OSError) as err:
            typed = getattr(args, "data_flag", None)
            if typed in ("--text", "--data") and len(err.args) == 1 and isinstance(err.args[0], str):
                other = "--data" if typed == "--text" else "--text"
                err.args = (re.sub(f"{other}(?![\\w-])", typed, err.args[0]),)
            raise
    return run


def register(sub: argparse._SubParsersAction) -> None:
    from attnreuse.plan import kinds_summary  # loaded with attnreuse already (the models register through it)

    p = sub.add_parser("hf", help="Hugging Face transformers encoders: analyze, convert, distill, eval, export",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)

    a = jobs.add_parser("analyze", help="map similarity across heads and layers, heatmaps, a suggested plan")
    a.add_argument("--model", required=True, help="the original transformers model directory")
    a.add_argument("--text", "--data", dest="text", action=_DataFlag, default="stdlib", help=TEXT_HELP)
    a.add_argument("--texts", type=int, default=64, help="held-out texts to measure on")
    a.add_argument("--tokens", type=int, default=None,
                   help="sequence length the MAC budget is costed at (default 512, or a text model's positions if fewer; "
                   "Whisper: its max_source_positions)")
    a.add_argument("--budget", type=float, default=0.67, help="attention MACs of the plan as a fraction of all-mha")
    a.add_argument("--min-score", type=float, default=0.5, help="least similarity a suggested change needs")
    a.add_argument("--kinds", type=csv_list, default=SUGGESTED_KINDS,
                   help="comma-separated: the changes the plan search may make, of share (same-head map cosine with "
                   "the map it applies), reuse (head maps' cosine with their layer's mean), skip (SkipAt: output "
                   "CKA with the previous layer), taylor and kvpool (kvpool:2; each: the maps' cosine with the maps "
                   f"it would apply); default {','.join(SUGGESTED_KINDS)}")
    a.add_argument("--output", required=True, help="directory for analysis.json, the heatmaps and frontier.png")
    a.add_argument("--force", action="store_true", help="replace an existing --output")
    a.set_defaults(func=_naming_typed_flag(_analyze))

    c = jobs.add_parser("convert", help="retrofit a model to an attention plan (zero-shot)")
    c.add_argument("--model", required=True, help="the original transformers model directory")
    c.add_argument("--plan", required=True, help=f"one kind, or one per layer comma-separated: {kinds_summary()}")
    c.add_argument("--text", "--data", dest="text", action=_DataFlag, default=None, help=TEXT_HELP + " (for the zero-shot fidelity and --fit-steps)")
    c.add_argument("--fit-steps", type=int, default=0, help="teacher-forced layer-wise fitting steps of the new parts "
                   "(attnreuse.hf.fit); 0: the retrofit alone")
    c.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the zero-shot fidelity")
    c.add_argument("--output", required=True, help="directory for the converted model")
    c.add_argument("--force", action="store_true", help="replace an existing --output")
    c.set_defaults(func=_naming_typed_flag(_convert))

    d = jobs.add_parser("distill", help="distil a converted model from the original on unlabeled text")
    d.add_argument("--teacher", required=True, help="the original transformers model directory")
    d.add_argument("--init", required=True, help="the converted model (an `hf convert` output or an `hf distill` run)")
    d.add_argument("--text", "--data", dest="text", action=_DataFlag, default="stdlib", help=TEXT_HELP)
    d.add_argument("--output", required=True, help="run directory (checkpoints, metrics.jsonl, summary.json, model/)")
    d.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    d.add_argument("--force", action="store_true", help="replace an existing run in --output")
    d.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    from attnreuse.hf.config import DistillConfig

    add_config_args(d, DistillConfig)
    d.set_defaults(func=_naming_typed_flag(_distill))

    e = jobs.add_parser("eval", help="fidelity and speed of converted models against the original")
    e.add_argument("candidates", nargs="+", help="converted model directories or distill runs")
    e.add_argument("--teacher", required=True, help="the original transformers model directory")
    e.add_argument("--text", "--data", dest="text", action=_DataFlag, default="stdlib", help=TEXT_HELP)
    e.add_argument("--tokens", type=int, default=None,
                   help="sequence length of the speed test (default 512, or a text model's positions if fewer; "
                   "Whisper: its max_source_positions, the one it takes)")
    e.add_argument("--runtimes", type=csv_list, default=("eager",), help="comma-separated: eager, eager-bf16 (bf16 "
                   "weights and inputs in PyTorch, beside the original in float32; and each model's bf16 fidelity), "
                   "ort, ort-fused (attention fused into com.microsoft MultiHeadAttention), "
                   "ort-int8 (the dynamic int8 export of `hf export --int8`), ort-int8-fused (that int8 export with "
                   "--fused-attention mha)")
    e.add_argument("--rounds", type=int, default=None, help=f"interleaved timing rounds (default {EVAL_TIMING['rounds']})")
    e.add_argument("--repeats", type=int, default=None,
                   help=f"timed calls per model, over all rounds (default {EVAL_TIMING['repeats']})")
    e.add_argument("--threads", type=int, default=None, help=f"torch threads (default {EVAL_TIMING['threads']})")
    e.add_argument("--no-speed", dest="speed", action="store_false", help="fidelity only")
    e.add_argument("--json", dest="json_path", help="write the records here")
    e.add_argument("--force", action="store_true", help="replace an existing --json file")
    e.set_defaults(func=_naming_typed_flag(_eval))

    x = jobs.add_parser("export", help="a converted model to ONNX, checked in ONNX Runtime")
    x.add_argument("model", help="a converted model directory or distill run")
    x.add_argument("--output", required=True, help="the .onnx file")
    x.add_argument("--force", action="store_true", help="replace an existing --output")
    x.add_argument("--fused-attention", metavar="OP", help="rewrite each attention into one fused ONNX Runtime op: "
                   "mha = com.microsoft MultiHeadAttention, attention = ONNX Attention (opset 23); "
                   "checked against PyTorch like the plain export")
    x.add_argument("--int8", action="store_true", help="write ONNX Runtime's dynamic int8 form (int8 weights, one "
                   "scale per output channel), checked by pooled-output cosine to PyTorch's float32 model")
    x.add_argument("--min-cosine", type=float, default=0.98, help="with --int8: the lowest pooled-output cosine "
                   "accepted on any check sequence, else nothing is written (default 0.98)")
    x.set_defaults(func=_export)


def _fid(f: dict | None) -> str:
    return "-" if f is None else f"cosine {f['cosine']:.4f}, top-{f['k']} overlap {f['topk_overlap']:.3f}"


def _analyze(args) -> int:
    from attnreuse.hf.jobs import analyze_job

    r = analyze_job(args.model, args.output, text=args.text, texts=args.texts, tokens=args.tokens,
                    budget=args.budget, min_score=args.min_score, kinds=args.kinds, force=args.force)
    red, s = r["redundancy"], r["suggestion"]
    per_layer = [sum(row) / len(row) for row in red["head_to_mean"]]
    print("head-to-layer-mean map cosine by layer: " + " ".join(f"{v:.2f}" for v in per_layer))
    over = f"; over the budget: {s['over_budget']}" if s.get("over_budget") else ""
    print(f"suggested plan {','.join(s['plan'])}: attention MACs {s['macs'] / s['mha_macs']:.3f} of all-mha "
          f"at {s['tokens']} tokens (budget {s['budget']}{over}) -> {args.output}")
    return 0


def _convert(args) -> int:
    from attnreuse.hf.jobs import convert_job

    if args.text is not None and not args.evaluate and not args.fit_steps:
        raise ValueError(f"--text {args.text} is read for the zero-shot fidelity and --fit-steps; --no-eval without "
                         "--fit-steps reads no text: drop --text or --no-eval")
    r = convert_job(args.model, args.plan, args.output, text=args.text or "stdlib", evaluate=args.evaluate,
                    fit_steps=args.fit_steps, force=args.force)
    print(f"plan {','.join(r['plan'])}: zero-shot {_fid(r.get('fidelity'))} -> {args.output}")
    return 0


def _distill(args) -> int:
    from attnreuse.hf.config import DistillConfig
    from attnreuse.hf.jobs import distill_job

    cfg = config_from_args(DistillConfig, args)
    r = distill_job(args.teacher, args.init, args.output, cfg, text=args.text, resume=args.resume,
                    force=args.force, progress=args.progress)
    print(f"{r['steps']} steps in {r['wall_s']:.0f} s: before {_fid(r['fidelity_before'])}; after {_fid(r['fidelity'])} -> {args.output}")
    return 0


def _eval(args) -> int:
    from attnreuse.hf.jobs import eval_job

    # the timing flags default to None, so a value given with --no-speed can be refused
    timing = {k: getattr(args, k) for k in EVAL_TIMING}
    given = [f"--{k}" for k in ("tokens", *EVAL_TIMING) if getattr(args, k) is not None]
    if not args.speed and given:
        raise ValueError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} the speed test, which --no-speed "
                         "skips; give one or the other")
    timing = {k: EVAL_TIMING[k] if v is None else v for k, v in timing.items()}
    r = eval_job(args.teacher, args.candidates, text=args.text, tokens=args.tokens, runtimes=args.runtimes,
                 speed=args.speed, json_path=args.json_path, force=args.force, **timing)
    for name, row in r["candidates"].items():
        print(f"{name}: plan {','.join(row['plan'])}: {_fid(row['fidelity'])}")
    for name, f in r.get("int8_fidelity", {}).items():
        print(f"{name}, dynamic int8 in ONNX Runtime: {_fid(f)}")
    for name, f in r.get("bf16_fidelity", {}).items():
        print(f"{name}, bf16 in PyTorch ({r['bf16_execution']}): {_fid(f)}")
    if r["speed"]:
        int8 = any("speedup_vs_baseline_fp32" in s for s in r["speed"])
        extra = " vs the original in float32 (its ORT export for int8, eager for bf16) |" if int8 else ""
        print(f"| model | runtime | ms (median) | speed-up vs the original [range] | MAC ideal | of ideal |{extra}  "
              f"({r['speed'][0]['tokens']} tokens, batch 1; speed-ups paired within each runtime)")
        for s in r["speed"]:
            fp32 = (f" {s['speedup_vs_baseline_fp32']:.2f}x [{s['speedup_vs_baseline_fp32_min']:.2f}-"
                    f"{s['speedup_vs_baseline_fp32_max']:.2f}] |" if "speedup_vs_baseline_fp32" in s else " - |") if int8 else ""
            print(f"| {s['model']} | {s['runtime']} | {s['latency_ms_median']:.2f} | {s['speedup']:.2f}x "
                  f"[{s['speedup_min']:.2f}-{s['speedup_max']:.2f}] | {s['mac_ideal']:.2f}x | {100 * s['of_ideal']:.0f}% |{fp32}")
    return 0


def _export(args) -> int:
    from attnreuse.hf.jobs import export_job

    r = export_job(args.model, args.output, force=args.force, fused_attention=args.fused_attention,
                   int8=args.int8, min_cosine=args.min_cosine)
    fused = (f", {r['fused_attention_nodes']} attention subgraph(s) fused into {r['fused_attention']}"
             if r["fused_attention"] else "")
    if r["int8"]:
        print(f"{r['path']}: {r['size_bytes'] / 1e6:.1f} MB, dynamic int8; pooled-output cosine to PyTorch >= "
              f"{r['int8_min_cosine']:.4f} on every check sequence (the float32 graph before it: max |diff| "
              f"{r['relative_diff']:.1e} of the output scale){fused}")
    else:
        print(f"{r['path']}: {r['size_bytes'] / 1e6:.1f} MB, ONNX Runtime vs PyTorch max |diff| {r['max_abs_diff']:.2e} "
              f"({r['relative_diff']:.1e} of the output scale){fused}")
    return 0
