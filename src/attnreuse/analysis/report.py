"""`attnreuse analyze` end to end: load the model, capture a few batches, measure, draw, suggest.

Writes into the output directory: similarity.json (every matrix, the summary and the suggested
plan), config.json, heads.png (per-layer head x head map cosine), layers.png (layer x layer map
cosine and attention-output CKA). On UniForm every mixer is a layer (one map per window, so its
head matrix is 1 x 1); layers of different stages are not compared, and no plan is suggested.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from attnreuse._io import atomic_path, atomic_write_json
from attnreuse.analysis.config import AnalyzeConfig
from attnreuse.capture import capture_attention
from attnreuse.analysis.similarity import head_cosine, layer_map_cosine, layer_output_cka
from attnreuse.analysis.suggest import geometry_of, head_groups, suggest_plan

__all__ = ["AnalyzeConfig", "analyze", "load_model", "sample_batches"]


def load_model(model: str | None, model_kwargs: dict, checkpoint: str | None) -> tuple[nn.Module, str]:
    """(model in eval mode, its name) from a name (random or given weights) or a run directory."""
    from attnreuse.runs import load_model as load_run_model
    from attnreuse.runs import read_model_spec

    if checkpoint is not None and not Path(checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file or directory")
    if model is None and (checkpoint is None or read_model_spec(checkpoint) is None):
        raise ValueError(f"checkpoint {checkpoint} is not a train/convert directory: give --model too")
    net, spec = load_run_model(model, model_kwargs, checkpoint)
    return net, spec["name"]


def sample_batches(model: nn.Module, data: str, batches: int, batch_size: int) -> list[Tensor]:
    """The first `batches` batches [B, 3, S, S] of the validation split, at the model's input size."""
    from attnreuse.data import build_transform, open_data

    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or getattr(model, "img_size", None)
    if size is None:
        size = model.pretrained_cfg["input_size"][-1]
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    cfg = model.pretrained_cfg
    tf = build_transform(size, cfg.get("mean"), cfg.get("std"), train=False)
    val = open_data(data).transformed(tf, tf).val
    n = min(len(val), batches * batch_size)
    xs = torch.stack([val[i][0] for i in range(n)])
    return list(xs.split(batch_size))


def _heatmaps(path: Path, mats: list[Tensor | None], titles: list[str], suptitle: str, cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(mats) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(mats):]:
        ax.axis("off")
    for ax, m, title in zip(axes.flat, mats, titles):
        ax.set_title(title, fontsize=9)
        if m is None:
            ax.text(0.5, 0.5, "no softmax map", ha="center", va="center")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        im = ax.imshow(m.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(suptitle)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _mean_offdiag(m: Tensor) -> float:
    n = m.shape[0]
    if n < 2:
        return float("nan")
    return float((m.nansum() - m.diagonal().nansum()) / (n * (n - 1)))


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _jsonable(m: Tensor | None):
    if m is None:
        return None
    return [[None if math.isnan(v) else round(v, 5) for v in row] for row in m.tolist()]


def analyze(config: AnalyzeConfig) -> dict:
    """Run the analysis `config` describes; returns (and writes) the similarity record."""
    out = Path(config.output)
    model, name = load_model(config.model, config.model_kwargs, config.checkpoint)
    batches = sample_batches(model, config.data, config.batches, config.batch_size)
    captures = capture_attention(model, batches)
    heads = [head_cosine(c.maps) if c.maps is not None and c.kind != "share" else None for c in captures]
    map_cos, cka = layer_map_cosine(captures), layer_output_cka(captures)
    if hasattr(model, "blocks"):
        tokens = next(c.output.shape[1] for c in captures if c.output is not None)
        geometry = geometry_of(model, tokens)
        suggestion = suggest_plan(
            geometry, heads, map_cos, cka, budget=config.mac_budget, min_score=config.min_score
        )
    else:  # UniForm: every mixer already computes one map for all its heads
        suggestion = {
            "plan": None,
            "reason": "every mixer of this model already shares one map across its heads; attention "
            "plans (share/skip/reuse/taylor) apply to ViT models",
        }
    L = len(captures)
    summary = {
        "mean_head_cosine": _nanmean([_mean_offdiag(h) for h in heads if h is not None]),
        "mean_adjacent_map_cosine": _nanmean([float(map_cos[i, i + 1]) for i in range(L - 1)]),
        "mean_adjacent_output_cka": _nanmean([float(cka[i, i + 1]) for i in range(L - 1)]),
    }
    result = {
        "model": name,
        "kinds": [c.kind for c in captures],
        "images": sum(b.shape[0] for b in batches),
        "head_cosine": [_jsonable(h) for h in heads],
        "head_groups": [head_groups(h, config.head_threshold) if h is not None else None for h in heads],
        "layer_map_cosine": _jsonable(map_cos),
        "layer_output_cka": _jsonable(cka),
        "summary": summary,
        "suggestion": suggestion,
    }
    atomic_write_json(out / "config.json", dataclasses.asdict(config))
    atomic_write_json(out / "similarity.json", result)
    _heatmaps(out / "heads.png", heads, [f"layer {i} ({c.kind})" for i, c in enumerate(captures)],
              f"{name}: head x head attention-map cosine", cols=min(4, L))
    _heatmaps(out / "layers.png", [map_cos, cka], ["attention-map cosine (same head)", "attention-output CKA"],
              f"{name}: layer x layer", cols=2)
    return result
