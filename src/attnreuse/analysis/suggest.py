"""Suggest an attention plan for a MAC budget from measured similarities, with the predicted saving.

MACs per block are counted, not written out: one attnreuse ViT block of the entry's kind is built
at the geometry's sizes and run once under PyTorch's FLOP counter (`measure.count_call_macs`:
multiply-accumulates, biases/norms/softmax ignored). For N tokens, C channels, d = C/h, G maps and
MLP width F that is, e.g., 4 N C^2 + 2 N^2 C + 2 N C F for "mha" and 2 N C^2 + N^2 C + 2 N C F for
"share"; a new kind is costed the day it is registered. The whole model adds the patch embedding
(Np C 3 p^2) and the classifier.

The greedy choice: repeatedly take the change whose similarity score is highest among those that
still apply (share: same-head map cosine with the map it would use; skip: CKA of the layer's attention
output with the previous layer's, as SkipAt argues; reuse: mean cosine between the layer's heads),
until the plan costs at most the budget or no change scores at least `min_score`. Scores are
pairwise measurements: the accuracy of the combined plan is a prediction to check by training.
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


def _kind(entry: str, heads: int):
    return get_kind(parse_entry(entry, heads).kind)


def _source(plan: list[str], layer: int, heads: int) -> int | None:
    """The nearest earlier layer computing a map (what a "share" at `layer` would apply)."""
    for j in range(layer - 1, -1, -1):
        if _kind(plan[j], heads).computes_map:
            return j
    return None


def _sources_in_use(plan: list[str], heads: int) -> set[int]:
    return {_source(plan, i, heads) for i, e in enumerate(plan) if _kind(e, heads).needs_map}


def suggest_plan(
    g: Geometry,
    head_cos: list[Tensor | None],
    map_cos: Tensor,
    output_cka: Tensor,
    *,
    budget: float,
    min_score: float = 0.5,
) -> dict:
    """Greedy plan for at most `budget` x the all-"mha" MACs (see the module docstring).

    head_cos: per layer [H, H] head cosines (None: no map); map_cos, output_cka: [L, L].
    """
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a fraction of the baseline MACs in (0, 1], got {budget!r}")
    plan = ["mha"] * g.depth
    base = plan_macs(g, plan)
    target = budget * base
    changes = []
    while plan_macs(g, plan) > target:
        used = _sources_in_use(plan, g.heads)
        options = []
        for i in range(g.depth):
            if not _kind(plan[i], g.heads).computes_map or i in used:  # the changes below replace a map-computing layer
                continue
            src = _source(plan, i, g.heads)
            if src is not None and not math.isnan(float(map_cos[i, src])):
                options.append((float(map_cos[i, src]), "share", i, f"map cosine with layer {src}"))
            if i > 0 and not math.isnan(float(output_cka[i, i - 1])):
                options.append((float(output_cka[i, i - 1]), "skip", i, f"output CKA with layer {i - 1}"))
            if plan[i] == "mha" and head_cos[i] is not None and g.heads > 1:
                c = head_cos[i]
                off = (c.sum() - c.diagonal().sum()) / (g.heads * (g.heads - 1))
                options.append((float(off), "reuse", i, "mean cosine between its heads"))
        saving = {o: block_macs(g, plan[o[2]]) - block_macs(g, o[1]) for o in options}
        options = [o for o in options if o[0] >= min_score and saving[o] > 0]
        if not options:
            break
        best = max(options, key=lambda o: (o[0], saving[o]))
        score, kind, i, why = best
        plan[i] = kind
        changes.append({"layer": i, "kind": kind, "score": round(score, 4), "because": why,
                        "saving_macs": saving[best]})
    macs = plan_macs(g, plan)
    return {
        "plan": plan, "budget": budget, "min_score": min_score, "baseline_macs": base, "macs": macs,
        "predicted_saving": 1.0 - macs / base, "budget_met": macs <= target, "changes": changes,
        "geometry": asdict(g),
    }
