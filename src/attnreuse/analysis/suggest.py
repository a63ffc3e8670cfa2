"""Suggest an attention plan for a MAC budget from measured similarities, with the predicted saving.

MACs per block are counted, not written out: one attnreuse ViT block of the entry's kind is built
at the geometry's sizes and run once under PyTorch's FLOP counter (`measure.count_call_macs`:
multiply-accumulates, biases/norms/softmax ignored). For N tokens, C channels, d = C/h, G maps and
MLP width F that is, e.g., 4 N C^2 + 2 N^2 C + 2 N C F for "mha" and 2 N C^2 + N^2 C + 2 N C F for
"share"; a new kind is costed the day it is registered. The whole model adds the patch embedding
(Np C 3 p^2) and the classifier.

The choice: among the plans whose changes each score at least `min_score` (share: same-head map
cosine with the map it applies; skip: CKA of the layer's attention output with the previous
layer's, as SkipAt argues; reuse: mean cosine between the layer's heads), the one with the least
summed 1 - score within the budget, found exactly (`attnreuse.plan.search`); where none is within
it, the cheapest. Scores are pairwise measurements: the accuracy of the combined plan is a
prediction to check by training.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from attnreuse.capture import vit_blocks
from attnreuse.plan import get_kind, parse_entry

__all__ = ["Geometry", "block_macs", "geometry_of", "head_groups", "plan_macs", "suggest_plan"]


@dataclass(frozen=True)
class Geometry:
    """The sizes that set a ViT's MACs."""

    tokens: int
    prefix_tokens: int
    dim: int
    heads: int
    mlp_hidden: int
    depth: int
    patch_size: int
    in_chans: int
    num_classes: int
    skip_kernel: int = 5


def geometry_of(model: nn.Module, tokens: int) -> Geometry:
    """Read the sizes of a timm / attnreuse ViT; `tokens` is N (prefix included) of the input used."""
    blocks = vit_blocks(model)
    ref = next((b for b in blocks if getattr(b, "attn", None) is not None), blocks[0])
    dim = model.embed_dim
    heads = getattr(model, "num_heads", None) or ref.attn.num_heads
    patch = model.patch_embed.patch_size
    return Geometry(
        tokens=tokens, prefix_tokens=model.num_prefix_tokens, dim=dim, heads=heads,
        mlp_hidden=ref.mlp.fc1.out_features, depth=len(blocks),
        patch_size=patch[0] if isinstance(patch, tuple) else patch,
        in_chans=model.patch_embed.proj.in_channels, num_classes=getattr(model, "num_classes", 0),
    )


@functools.lru_cache(maxsize=64)
def block_macs(g: Geometry, entry: str) -> int:
    """MACs of one block whose attention is the plan entry ("mha", "reuse:G", "share", ...),
    counted on a block of that kind built at `g`'s sizes (see the module docstring)."""
    from attnreuse.measure import count_call_macs
    from attnreuse.models.vit import PlanBlock

    spec = parse_entry(entry, g.heads)
    N, C, Np = g.tokens, g.dim, g.tokens - g.prefix_tokens
    with torch.random.fork_rng(devices=[]):  # building the block draws weights: leave the caller's RNG as it was
        blk = PlanBlock(
            C, g.heads, mlp_ratio=(g.mlp_hidden + 0.5) / C, qkv_bias=True, spec=spec,
            num_prefix_tokens=g.prefix_tokens, skip_kernel_size=g.skip_kernel,
        ).eval()  # fmt: skip
    x = torch.zeros(1, N, C)
    attn_map = torch.full((1, g.heads, N, N), 1.0 / N)  # what a map-applying kind is handed
    side = math.isqrt(Np)
    grid = (side, side) if side * side == Np else (1, Np)
    return count_call_macs(lambda: blk(x, attn_map, x, grid))


def plan_macs(g: Geometry, plan: list[str]) -> int:
    """MACs of the whole model (patch embedding, blocks, classifier) under `plan`."""
    if len(plan) != g.depth:
        raise ValueError(f"plan has {len(plan)} entries for a model of depth {g.depth}")
    Np = g.tokens - g.prefix_tokens
    embed = Np * g.dim * g.in_chans * g.patch_size**2
    return embed + sum(block_macs(g, e) for e in plan) + g.dim * g.num_classes


def head_groups(cos: Tensor, threshold: float) -> list[list[int]]:
    """Heads grouped greedily: each group's first head has cosine >= threshold with the others."""
    left, groups = list(range(cos.shape[0])), []
    while left:
        lead = left.pop(0)
        group = [lead] + [h for h in left if float(cos[lead, h]) >= threshold]
        left = [h for h in left if h not in group]
        groups.append(group)
    return groups


def suggest_plan(
    g: Geometry,
    head_cos: list[Tensor | None],
    map_cos: Tensor,
    output_cka: Tensor,
    *,
    budget: float,
    min_score: float = 0.5,
) -> dict:
    """The least-loss plan for at most `budget` x the all-"mha" MACs (see the module docstring).

    head_cos: per layer [H, H] head cosines (None: no map); map_cos, output_cka: [L, L].
    """
    from attnreuse.plan.search import plan_frontier, within

    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a fraction of the baseline MACs in (0, 1], got {budget!r}")
    base = plan_macs(g, ["mha"] * g.depth)
    kinds = ("share", "skip", "reuse")
    macs = {k: block_macs(g, k) for k in ("mha", *kinds)}

    def score(i: int, kind: str, source: int | None) -> float | None:
        if kind == "share":
            return float(map_cos[i, source])
        if kind == "skip":
            return float(output_cka[i, i - 1])
        if head_cos[i] is None or g.heads < 2:
            return None
        c = head_cos[i]
        return float((c.sum() - c.diagonal().sum()) / (g.heads * (g.heads - 1)))

    fixed = base - g.depth * macs["mha"]  # patch embedding and classifier
    front = plan_frontier(g.depth, kinds, macs, score, min_score=min_score)
    found = within(front, budget * base - fixed)
    plan = list(found.plan)
    changes = [
        {"layer": i, "kind": k, "score": round(s, 4), "because": _because(plan, i, k),
         "saving_macs": macs["mha"] - macs[k]}
        for i, (k, s) in enumerate(zip(plan, found.scores)) if s is not None
    ]  # fmt: skip
    macs_total = plan_macs(g, plan)
    return {
        "plan": plan, "budget": budget, "min_score": min_score, "baseline_macs": base, "macs": macs_total,
        "predicted_saving": 1.0 - macs_total / base, "budget_met": found.budget_met, "changes": changes,
        "predicted_loss": found.loss, "geometry": asdict(g),
        # the whole MAC-loss trade-off (whole-model MACs), for another budget without measuring again
        "frontier": [{"plan": list(f.plan), "macs_fraction": (f.macs + fixed) / base, "predicted_loss": f.loss}
                     for f in front],
    }


def _because(plan: list[str], i: int, kind: str) -> str:
    """What layer i's score measured, in the plan found."""
    if kind == "share":
        return f"map cosine with layer {max(j for j in range(i) if get_kind(plan[j]).computes_map)}"
    return f"output CKA with layer {i - 1}" if kind == "skip" else "mean cosine between its heads"
