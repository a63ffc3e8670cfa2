"""Stages 2 and 3: vision models timed by `attnreuse bench models` (random weights: latency only).

2. UniForm against timm's EfficientViT-M of the same widths, with the pointwise mixer probe
   (`models.probes`: every mixer cut to its two 1x1 convs, the no-attention ceiling), in eager
   PyTorch and ONNX Runtime. With T the latency of EfficientViT (e), UniForm (u) and the probe (p):
   speed-up s = T_e / T_u and ceiling c = T_e / T_p (each paired round by round); the share of the
   possible gain Reuse Attention takes is (T_e - T_u) / (T_e - T_p); the mixer-level speed-up is
   (T_e - T_p) / (T_u - T_p), the attention work above the probe's 1x1 convs in each network.
3. A ViT-S with each attention plan at each resolution, eager, against the `mha` plan, beside the
   ideal speed-up from MAC counts (PyTorch's FLOP counter, `measure.count_call_macs`).
"""

from __future__ import annotations

import sys

from attnreuse.demo.config import DemoConfig

__all__ = ["gain_split", "run_uniform", "run_vit"]

_KEEP = ("model", "family", "baseline", "img_size", "runtime", "error", "params", "macs", "latency_ms_median",
         "latency_ms_p90", "speedup_vs_baseline", "speedup_vs_baseline_paired", "speedup_vs_baseline_paired_range",
         "ideal_speedup_vs_baseline", "fraction_of_ideal", "latency_vs_eager")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _bench(models: tuple[str, ...], img_sizes: tuple[int, ...], runtimes: tuple[str, ...], cfg: DemoConfig,
           rounds: int, repeats: int, min_time_s: float) -> list[dict]:
    from attnreuse.bench.models import ModelBenchConfig, run_models

    config = ModelBenchConfig(models=models, img_sizes=img_sizes, threads=cfg.threads, runtimes=runtimes,
                              warmup=1 if cfg.quick else 3, repeats=repeats, min_time_s=min_time_s, rounds=rounds)
    records = run_models(config)
    failed = [f"{r['model']} {r['runtime']}: {r['error']}" for r in records if r.get("error")]
    if failed:
        raise RuntimeError("bench models failed: " + "; ".join(failed))
    return [{k: r.get(k) for k in _KEEP} for r in records]


def gain_split(speedup: float, ceiling: float) -> dict:
    """From s = T_e / T_u and c = T_e / T_p: the share of the possible gain taken,
    (T_e - T_u) / (T_e - T_p), and the mixer-level speed-up (T_e - T_p) / (T_u - T_p); None where
    the probe is not faster than the model it is cut from (no room measured)."""
    room = 1 - 1 / ceiling  # (T_e - T_p) / T_e
    above = 1 / speedup - 1 / ceiling  # (T_u - T_p) / T_e
    return {
        "share_of_gain": (1 - 1 / speedup) / room if room > 0 else None,
        "mixer_speedup": room / above if above > 0 and room > 0 else None,
    }


def run_uniform(cfg: DemoConfig, root) -> dict:
    from attnreuse.bench.models import baseline_of

    probe = f"{cfg.uniform_model}:mixer=pointwise"
    base = baseline_of(cfg.uniform_model)
    _say(f"uniform: {cfg.uniform_model} and its pointwise probe against {base} at {cfg.uniform_img_size}x{cfg.uniform_img_size}")
    records = _bench((cfg.uniform_model, probe), (cfg.uniform_img_size,), ("eager", "ort"), cfg,
                     cfg.uniform_rounds, cfg.uniform_repeats, cfg.uniform_min_time_s)
    by = {(r["model"], r["runtime"]): r for r in records}
    summary = {}
    for runtime in ("eager", "ort"):
        s = by[(cfg.uniform_model, runtime)]["speedup_vs_baseline_paired"]
        c = by[(probe, runtime)]["speedup_vs_baseline_paired"]
        summary[runtime] = {"speedup": s, "ceiling": c, **gain_split(s, c)}
    return {"model": cfg.uniform_model, "baseline": base, "probe": probe, "img_size": cfg.uniform_img_size,
            "rounds": cfg.uniform_rounds, "records": records, "summary": summary}


def run_vit(cfg: DemoConfig, root) -> dict:
    _say(f"vit: {len(cfg.vit_models)} ViT-S plans at {', '.join(map(str, cfg.vit_img_sizes))} px, eager")
    records = _bench(cfg.vit_models, cfg.vit_img_sizes, ("eager",), cfg, cfg.vit_rounds, cfg.vit_repeats,
                     cfg.vit_min_time_s)
    return {"models": list(cfg.vit_models), "img_sizes": list(cfg.vit_img_sizes), "rounds": cfg.vit_rounds,
            "records": records}
