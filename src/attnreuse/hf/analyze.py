"""Where a `transformers` encoder's attention is redundant, and a plan that exploits it.

Maps are captured with transformers' eager attention (`output_attentions=True`) on real text;
padded rows and columns are zeroed, so every cosine is over real tokens only. Per layer l, head h:
- head_to_mean [L, H]: cos(A_lh, mean_h A_l): how well one map could serve every head ("reuse");
- layer_map_cosine [L, L]: same-head cosine between layers' maps ("share" applies the map of an
  earlier layer to the same head);
- output_cka [L, L]: linear CKA between layers' attention outputs ("skip", as SkipAt measures it);
- taylor_cosine [L]: cos(A_l, the map Taylor attention applies instead) ("taylor");
- kvpool_cosine [L]: cos(A_l, the map kvpool:2 applies instead, spread over the pooled tokens) ("kvpool").
The last two are exact functions of the softmax map: log A_ij is the score up to a per-row
constant, which both replacements cancel (`taylor_map`, `kvpool_map`). Taylor's map is made from
the whole score, so on MPNet it includes the relative-position bias the kind does without.
`suggest` turns these into the plan of least predicted loss under a MAC budget, costing each kind
on the host's own layer with PyTorch's FLOP counter (`layer_macs`), not a hand formula; on DeBERTa
that count includes the relative terms a layer that forms scores adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse.hf.config import SUGGESTED_KINDS
from attnreuse.hf.fidelity import batches, real_positions
from attnreuse.hf.hosts import host_for, length_limit
from attnreuse.plan import LayerSpec, SourceAttention, get_kind
from attnreuse.plan.kvpool import DEFAULT_POOL

__all__ = ["MAP_BUDGET_BYTES", "Redundancy", "capture", "kvpool_map", "layer_macs", "suggest", "taylor_map"]

# Bytes of maps one batch may hold: every layer's [B, H, N, N] maps, their masked copies and the
# cosines' temporaries (about three times the maps). Text batches stay far below it; a Whisper
# encoder's 1500 frames do not (one whisper-base clip: 6 x 8 x 1500^2 floats, 0.4 GB of maps).
MAP_BUDGET_BYTES = 2 << 30


def _batch_size(model: nn.Module, batch_size: int, max_length: int) -> int:
    """At most `batch_size` items, fewer where their maps would pass MAP_BUDGET_BYTES (the longest
    sequence: `max_length`, or a Whisper encoder's fixed max_source_positions)."""
    from attnreuse.hf.hosts import fixed_length

    config = model.config
    n = fixed_length(config) or max_length
    per_item = 3 * config.num_hidden_layers * config.num_attention_heads * n * n * 4
    return max(1, min(batch_size, MAP_BUDGET_BYTES // per_item))


@dataclass
class Redundancy:
    head_to_mean: Tensor  # [L, H]
    layer_map_cosine: Tensor  # [L, L]
    output_cka: Tensor  # [L, L]
    taylor_cosine: Tensor  # [L]
    kvpool_cosine: Tensor  # [L]
    texts: int

    def to_json(self) -> dict:
        return {"head_to_mean": self.head_to_mean.tolist(), "layer_map_cosine": self.layer_map_cosine.tolist(),
                "output_cka": self.output_cka.tolist(), "taylor_cosine": self.taylor_cosine.tolist(),
                "kvpool_cosine": self.kvpool_cosine.tolist(), "texts": self.texts}


def _log_map(a: Tensor, keys: Tensor) -> Tensor:
    """log of a softmax map [B, H, N, N] on its real keys (`keys` [B, 1, 1, N] bool), 0 elsewhere:
    the scores up to a per-row constant (a probability that underflowed reads as the least positive)."""
    return a.clamp_min(torch.finfo(a.dtype).tiny).log().masked_fill(~keys, 0.0)


def taylor_map(a: Tensor, real: Tensor) -> Tensor:
    """The map ViTALiTy's Taylor attention (`taylor`) applies where softmax applied `a` [B, H, N, N],
    over the real keys (`real` [B, N] bool): with s q_i.k_j = log a_ij + c_i and keys centred over
    the L real ones, s q_i.k~_j = log a_ij - mean_j log a_ij, and row i is (1 + s q_i.k~_j) / L."""
    keys = real[:, None, None, :]
    count = keys.sum(-1, keepdim=True).to(a.dtype)
    log = _log_map(a, keys)
    return ((1 + log - log.sum(-1, keepdim=True) / count) / count).masked_fill(~keys, 0.0)


def kvpool_map(a: Tensor, real: Tensor, pool: int) -> Tensor:
    """The map `kvpool:pool` applies where softmax applied `a` [B, H, N, N], as weights of the
    original tokens: window w of `pool` tokens (c_w real) has score mean_{j in w} log a_ij +
    log(c_w / pool) (`attnreuse.plan.kvpool`: the mean key's score is the mean score), softmax over
    windows, each window's weight shared by its c_w real tokens (the pooled value is their mean)."""
    B, H, N, _ = a.shape
    keys = real[:, None, None, :]
    windows = -(-N // pool)
    grow = windows * pool - N
    log = F.pad(_log_map(a, keys), (0, grow)).unflatten(-1, (windows, pool))  # [B, H, N, M, R]
    count = F.pad(keys, (0, grow)).unflatten(-1, (windows, pool)).sum(-1).to(a.dtype)  # [B, 1, 1, M]
    score = log.sum(-1) / count.clamp_min(1) + (count / pool).log()  # an empty window: -inf
    weight = torch.softmax(score, dim=-1) / count.clamp_min(1)
    return weight.repeat_interleave(pool, dim=-1)[..., :N].masked_fill(~keys, 0.0)


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Cosine over the last two dims, averaged over the first: [T, ..., N, N] pairs -> [...]."""
    return F.cosine_similarity(a.flatten(-2).double(), b.flatten(-2).double(), dim=-1).mean(0)


@torch.no_grad()  # not inference_mode: see attnreuse.hf.fidelity.embed
def capture(model: nn.Module, tokenizer, texts: list[str], *, batch_size: int = 16, max_length: int = 128) -> Redundancy:
    """Measure `model` (an original, unconverted encoder) on `texts`."""
    from attnreuse.measure import linear_cka

    host = host_for(model.config)
    max_length = length_limit(model.config, max_length)
    previous = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # the only implementation that returns the maps
    modules = [m for _, _, m in host.attention_modules(model)]
    outputs: list[list[Tensor]] = [[] for _ in modules]
    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: outputs[i].append(out[0])) for i, m in enumerate(modules)]
    L, H = len(modules), model.config.num_attention_heads
    head_sum, layer_sum, count = torch.zeros(L, H, dtype=torch.float64), torch.zeros(L, L, dtype=torch.float64), 0
    taylor_sum, kvpool_sum = torch.zeros(L, dtype=torch.float64), torch.zeros(L, dtype=torch.float64)
    flat_out: list[list[Tensor]] = [[] for _ in modules]
    try:
        for batch in batches(tokenizer, texts, _batch_size(model, batch_size, max_length), max_length):
            out = model(**batch, output_attentions=True)
            m = real_positions(model, batch, out.attentions[0].shape[-1]).to(torch.float32)
            pair = (m[:, :, None] * m[:, None, :])[:, None]  # [B, 1, N, N]
            maps = [a * pair for a in out.attentions]  # L x [B, H, N, N]
            B = m.shape[0]
            for i, a in enumerate(maps):
                head_sum[i] += _cos(a, a.mean(1, keepdim=True).expand_as(a)) * B
                taylor_sum[i] += _cos(a, taylor_map(a, m.bool()) * pair).mean() * B
                kvpool_sum[i] += _cos(a, kvpool_map(a, m.bool(), DEFAULT_POOL) * pair).mean() * B
                for j in range(i, L):
                    layer_sum[i, j] += _cos(a, maps[j]).mean() * B
                real = m.bool()
                flat_out[i].append(outputs[i][-1][real])
            count += B
            for o in outputs:
                o.clear()
    finally:
        for h in hooks:
            h.remove()
        model.config._attn_implementation = previous
    layer = layer_sum / count
    layer = torch.triu(layer) + torch.triu(layer, 1).T
    reps = [torch.cat(f) for f in flat_out]
    cka = torch.tensor([[linear_cka(reps[i], reps[j]) for j in range(L)] for i in range(L)])
    return Redundancy((head_sum / count).float(), layer.float(), cka.float(), (taylor_sum / count).float(),
                      (kvpool_sum / count).float(), count)


def layer_macs(src: SourceAttention, kind_entry: str, tokens: int, prepare=None) -> int:
    """Multiply-accumulates of one layer's attention core of `kind_entry` on `tokens` tokens
    (projections included, the host's output projection excluded), counted by torch's FLOP counter.
    `prepare(core)`, when given, adds to the core what the host's layer computes beside the kind's
    own work (DeBERTa's relative terms: `attnreuse.hf.disentangled.costing_term`)."""
    from attnreuse.measure import count_call_macs

    name, _, arg = kind_entry.partition(":")
    kind = get_kind(name)
    spec = LayerSpec(name, kind.parse_arg(arg, src.num_heads, kind_entry))
    core = kind.retrofit(spec, src).eval()
    if prepare is not None:
        prepare(core)
    x = torch.zeros(1, tokens, src.dim)
    attn_map = torch.full((1, src.num_heads, tokens, tokens), 1.0 / tokens)
    return count_call_macs(lambda: kind.run(core, x, None, None, attn_map, x, False))


def suggest(red: Redundancy, src: SourceAttention, *, tokens: int, budget: float, min_score: float = 0.5,
            kinds: tuple[str, ...] = SUGGESTED_KINDS, prepare=None) -> dict:
    """The plan of least predicted loss whose attention MACs are at most `budget` x the all-mha
    plan's, found exactly (`plan.search`: the frontier, and the point the budget picks; `prepare`: as `layer_macs` takes it). Returns {"plan", "macs", "mha_macs", ...,
    "frontier": every plan no other beats on both attention MACs and predicted loss}.

    Scores (a change's predicted loss is 1 - score; each must be at least `min_score`): reuse ->
    mean head_to_mean of the layer; share -> layer_map_cosine with the closest earlier
    map-computing layer; skip -> output CKA with the previous layer; taylor, kvpool (kvpool:2) ->
    the cosine of the layer's maps with the maps they would apply. Layer 0 stays mha. Where no
    plan the scores allow meets the budget, the cheapest one is returned with `over_budget` saying
    why (None when the plan is within the budget).
    """
    from attnreuse.plan.search import plan_frontier, within

    if not 0 < budget <= 1:
        raise ValueError(f"--budget must be a fraction in (0, 1], got {budget!r}")
    L = red.head_to_mean.shape[0]
    macs = {k: layer_macs(src, k, tokens, prepare) for k in ("mha", *kinds)}

    def score(i: int, kind: str, source: int | None) -> float | None:
        if i == 0:
            return None
        if kind == "reuse":
            return float(red.head_to_mean[i].mean())
        if kind == "share":
            return float(red.layer_map_cosine[i, source])
        if kind == "taylor":
            return float(red.taylor_cosine[i])
        if kind == "kvpool":
            return float(red.kvpool_cosine[i])
        return float(red.output_cka[i, i - 1])

    full = L * macs["mha"]
    front = plan_frontier(L, kinds, macs, score, min_score=min_score)  # the whole trade-off, recorded below
    found = within(front, budget * full)
    plan = list(found.plan)
    chosen = [{"layer": i, "kind": k, "score": s} for i, (k, s) in enumerate(zip(plan, found.scores)) if s is not None]
    over = None
    if not found.budget_met:
        over = ("every layer but the first is changed already" if "mha" not in plan[1:]
                else f"no plan whose changes each score at least --min-score {min_score} reaches it")
    # the whole MAC-loss trade-off, for choosing another budget without measuring again
    frontier = [{"plan": list(f.plan), "macs_fraction": f.macs / full, "predicted_loss": f.loss} for f in front]
    return {"plan": plan, "macs": found.macs, "mha_macs": full, "budget": budget, "tokens": tokens,
            "changes": chosen, "predicted_loss": found.loss, "layer_macs": macs, "over_budget": over,
            "frontier": frontier}
