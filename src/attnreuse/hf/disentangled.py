"""DeBERTa's disentangled attention as a score term of attnreuse's map cores.

DeBERTa (v2, and the v3 checkpoints, model_type "deberta-v2") has no absolute positions in its
layers' input: each layer adds to its content scores q_i . k_j two relative-position terms, made
from the encoder's relative-position embeddings R [2S, C] (S: the attention span, `position_buckets`
when bucketed) and the layer's own projections (`share_att_key`):

    content -> position  c2p[i, j] = q_i . Wk(R)[d(i, j)]
    position -> content  p2c[i, j] = k_j . Wq(R)[d'(j, i)]

with d(i, j) = clamp(r(i, j) + S, 0, 2S - 1) and d'(j, i) = clamp(-r(j, i) + S, 0, 2S - 1), r the
(log-bucketed) relative position the encoder hands every layer (`relative_pos`); the sum is
scaled by 1 / sqrt(d x (1 + number of terms)), as the content scores are.

`DisentangledTerm` computes that sum from a core's queries and keys and its own `query` / `key`
Linears applied to R: for `mha` and `reuse:H` (one map per head) it is the original's term
exactly; for `reuse:G` it is the same construction on the G merged heads. Kinds that apply an
earlier map (`share`) keep the term inside that map; `taylor` and `kvpool` form no full score
matrix and do without it.

Shapes: q [B, G, N, d], k [B, G, M, d]; R [>= 2S, C]; relative_pos [N, M] or [1 | B, N, M] (long);
term [B, G, N, M].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DisentangledTerm", "add_disentangled_term", "costing_term", "disentangled_scale"]

TERMS = ("c2p", "p2c")


def disentangled_scale(module: nn.Module) -> float:
    """The score scale of a transformers DeBERTa-v2 attention module: 1 / sqrt(d (1 + its terms))."""
    terms = sum(t in TERMS for t in (module.pos_att_type or ()))
    return (module.attention_head_size * (1 + terms)) ** -0.5


class DisentangledTerm:
    """The c2p / p2c score term of one converted layer (module doc). `state.relative` is read at
    call time: the (rel_embeddings [>= 2S, C], relative_pos) pair the layer sets each forward, or
    None (no term). `core` and `state` are attributes, not a closure, so a deep copy of the model
    (one `copy.deepcopy` call) gives the copy's term the copy's core and state."""

    def __init__(self, core: nn.Module, span: int, kinds: tuple[str, ...], scale: float, state) -> None:
        unknown = set(kinds) - set(TERMS)
        if unknown:
            raise ValueError(f"pos_att_type {sorted(unknown)} is not a DeBERTa term; it takes {', '.join(TERMS)}")
        self.core, self.span, self.kinds, self.scale = core, span, tuple(kinds), scale
        self.state = state  # attnreuse.hf.modules.PlanState

    def __call__(self, q: Tensor, k: Tensor) -> Tensor | None:
        pair = self.state.relative
        if pair is None or not self.kinds:
            return None
        rel, rel_pos = pair
        heads, width = q.shape[1], q.shape[-1]
        rel = rel[: 2 * self.span].to(q.dtype)
        rel_pos = rel_pos.to(device=q.device, dtype=torch.long)
        while rel_pos.dim() < 4:  # [N, M] or [B | 1, N, M] -> [B | 1, 1, N, M]
            rel_pos = rel_pos.unsqueeze(0 if rel_pos.dim() < 3 else 1)
        batch, n, m = q.shape[0], q.shape[2], k.shape[2]
        term = torch.zeros((), dtype=q.dtype, device=q.device)
        if "c2p" in self.kinds:
            pos_key = self.core.key(rel).view(-1, heads, width).transpose(0, 1)  # [G, 2S, d]
            index = (rel_pos + self.span).clamp(0, 2 * self.span - 1).expand(batch, heads, n, m)
            term = term + torch.gather(q @ pos_key.transpose(-1, -2), -1, index)  # [B, G, N, 2S] -> [B, G, N, M]
        if "p2c" in self.kinds:
            pos_query = self.core.query(rel).view(-1, heads, width).transpose(0, 1)  # [G, 2S, d]
            index = (-rel_pos + self.span).clamp(0, 2 * self.span - 1).expand(batch, heads, m, n)
            term = term + torch.gather(k @ pos_query.transpose(-1, -2), -1, index).transpose(-1, -2)
        return term * self.scale


def add_disentangled_term(core: nn.Module, module: nn.Module, state) -> None:
    """Give `core` (a converted layer's kind module) the score term of `module` (the DeBERTa
    attention it replaces) where the core forms scores from queries and keys (`MapSelfAttention`:
    mha, reuse); it reads each forward's relative inputs from `state.relative`. The term takes the
    core's own scale: `reuse` folds the score scale into its key rows and scores at 1.0, and its
    position projections, made by the same rows, carry it the same way."""
    from attnreuse.layers.token_attention import MapSelfAttention

    if isinstance(core, MapSelfAttention) and getattr(module, "relative_attention", False):
        core.score_term = DisentangledTerm(core, module.pos_ebd_size, tuple(module.pos_att_type or ()),
                                           core.scale, state)


def costing_term(core: nn.Module, module: nn.Module, tokens: int) -> None:
    """`add_disentangled_term` with fixed inputs of the right shapes (zero relative embeddings
    [2S, C], relative positions [tokens, tokens]), so that counting a core's MACs on `tokens`
    tokens (`attnreuse.hf.analyze.layer_macs`) counts the terms' products as a forward does."""
    from types import SimpleNamespace

    span = getattr(module, "pos_ebd_size", 0)
    weight = module.query_proj.weight
    inputs = (torch.zeros(2 * span, weight.shape[1], dtype=weight.dtype), torch.zeros(tokens, tokens, dtype=torch.long))
    add_disentangled_term(core, module, SimpleNamespace(relative=inputs))
