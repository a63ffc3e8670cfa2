"""`reuse` / `reuse:G`: Reuse Attention (UniForm): G softmax maps (default 1) shared by all heads.

Retrofit (zero-shot): the G maps' query/key projections are the best rank-d approximation
(d = head width) of the mean score of the heads in their group. Head h's score is the bilinear
form s (W_q,h x_i + b_q,h) . (W_k,h x_j + b_k,h) = x~_i^T A_h x~_j with x~ = [x; 1] and
A_h = s [W_q,h | b_q,h]^T [W_k,h | b_k,h], a (C+1) x (C+1) matrix; the group's mean form
M = mean_h A_h is factored by SVD, M ~ U S V^T truncated to d, and the new query / key rows are
(U S^1/2)^T and (V S^1/2)^T (the last column is the bias). So the map starts as softmax of the
heads' mean score as far as d dimensions carry it; values are kept as they were.

Under rotary position embeddings (a host whose `SourceAttention.rotary` is set: ModernBERT) the
map's query and key are rotated too, and a real factorisation of M would not survive the rotation.
Read each rotary pair (dims f, f + d/2) as a complex number: the rotation multiplies query and
key pairs by e^{i theta_f p}, and head h's score is sum_f Re(x~_i^T (a_hf conj(b_hf)^T) x~_j
e^{i theta_f (p_i - p_j)}), with a_hf, b_hf the complex rows [W | b]_f + i [W | b]_{f + d/2} of
its query and key. The group's mean is then sum_f Re(x~_i^T M_f x~_j e^{...}), M_f = s mean_h
a_hf conj(b_hf)^T, and each frequency's form is replaced by its best rank-1 complex approximation
sigma u v^H (p = sigma^1/2 u, q = sigma^1/2 v give the new pair f's rows), which holds at every
relative position. One head (`reuse:H`) is rank 1 per frequency: reproduced exactly.
"""

from __future__ import annotations

import torch

from attnreuse.layers.token_attention import MapSelfAttention
from attnreuse.plan._copy import copy_projection, run_map_core, vit_attention, vit_map_attend
from attnreuse.plan._vit_retrofit import qk_rows, representative
from attnreuse.plan.registry import Kind, register_kind


def _augmented(src, name: str, rows: slice) -> torch.Tensor:
    """[W | b] rows of projection `name`, float64: [len(rows), C + 1]."""
    w = src.weights[name][rows].double()
    b = src.biases[name]
    b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b[rows].double()
    return torch.cat([w, b[:, None]], dim=1)


def mean_score_factors(src, heads: range, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-`rank` factors (P, Q), each [rank, C + 1], with P^T Q ~ the mean score form of `heads`."""
    d = src.head_dim
    form = sum(
        _augmented(src, "query", slice(h * d, (h + 1) * d)).T @ _augmented(src, "key", slice(h * d, (h + 1) * d))
        for h in heads
    ) * (src.scale / len(heads))
    U, S, Vh = torch.linalg.svd(form)
    root = S[:rank].sqrt()
    return (U[:, :rank] * root).T, Vh[:rank] * root[:, None]


def _top_pair(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, q) with outer(p, conj(q)) the best rank-1 approximation of M = A^T conj(B), for complex
    A, B [h, n]: through thin QR factors (M = Qa (Ra Rb^H) Qb^H), so no n x n SVD is formed."""
    Qa, Ra = torch.linalg.qr(A.T)  # [n, h], [h, h]
    Qb, Rb = torch.linalg.qr(B.T)
    U, S, Vh = torch.linalg.svd(Ra @ Rb.conj().T)  # Ra conj(Rb)^T
    root = S[0].sqrt()
    return Qa @ U[:, 0] * root, Qb @ Vh[0].conj() * root


def rotary_score_factors(src, heads: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (P, Q), each [d, C + 1], of one rotary head whose score is, at every relative
    position, the best rank-1-per-frequency approximation of the mean score of `heads` (module doc)."""
    d, half = src.head_dim, src.head_dim // 2
    P = torch.zeros(d, src.dim + 1, dtype=torch.float64)
    Q = torch.zeros_like(P)
    pairs = {name: [_augmented(src, name, slice(h * d, (h + 1) * d)) for h in heads] for name in ("query", "key")}
    weight = src.scale / len(heads)
    for f in range(half):
        A = torch.stack([torch.complex(r[f], r[f + half]) for r in pairs["query"]]) * weight
        B = torch.stack([torch.complex(r[f], r[f + half]) for r in pairs["key"]])
        p, q = _top_pair(A, B)
        P[f], P[f + half], Q[f], Q[f + half] = p.real, p.imag, q.real, q.imag
    return P, Q


class Reuse(Kind):
    name = "reuse"
    computes_map = True
    arg_syntax = "reuse:G"
    help = "Reuse Attention: one map (reuse:G, G maps) shared by every value head"

    def parse_arg(self, arg, num_heads, where):
        if not arg:
            return None  # one map
        if not arg.isdigit() or int(arg) < 1 or num_heads % int(arg):
            raise ValueError(f"{where}: G in 'reuse:G' must be a positive divisor of the {num_heads} heads (a divisor of num_heads={num_heads})")
        return int(arg) if int(arg) > 1 else None  # reuse:1 is reuse

    def retrofit(self, spec, src):
        G, d, H = spec.arg or 1, src.head_dim, src.num_heads
        core = MapSelfAttention(src.dim, H, qk_heads=G, qk_dim=G * d, scale=1.0, bias=True)
        per = H // G
        with torch.no_grad():
            for g in range(G):
                group = range(g * per, (g + 1) * per)
                P, Q = rotary_score_factors(src, group) if src.rotary else mean_score_factors(src, group, d)
                rows = slice(g * d, (g + 1) * d)
                for lin, f in ((core.query, P), (core.key, Q)):
                    lin.weight[rows] = f[:, :-1].to(lin.weight.dtype)
                    lin.bias[rows] = f[:, -1].to(lin.bias.dtype)
        copy_projection(core.value, src, "value")
        return core

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return run_map_core(core, x, key_bias, emit_map)

    def parameters_kept(self):
        return ("value",)

    def removed_parts(self, spec, num_heads):
        kept = (spec.arg or 1) / num_heads  # G maps of H: Q/K are G head widths, G score maps
        return {"qk_proj": 1.0 - kept, "scores_softmax": 1.0 - kept}

    def vit_modules(self, spec, args):
        G = spec.arg or 1
        qk_dim = args.options["reuse_qk_dim"] if G != args.num_heads else None
        attn = vit_attention(args, qk_heads=G, qk_dim=qk_dim, qk_norm=args.qk_norm, norm_layer=args.norm_layer)
        return {"norm1": args.norm_layer(args.dim), "attn": attn}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        return vit_map_attend(block, x)

    def vit_retrofit(self, r, layer):
        """Each of the G maps starts from the q/k rows of the most representative head of its block
        of num_heads / G value heads (highest mean cosine with the block's other heads' maps)."""
        spec, H = r.specs[layer], r.num_heads
        G = spec.arg or 1
        if G == H or r.source_specs[layer] == spec:
            return []  # a fused qkv, or the source's own maps: carried over as they are
        per, chosen = H // G, []
        for g in range(G):
            block = list(range(g * per, (g + 1) * per))
            chosen.append(block[representative([r.captures[layer].maps[:, h] for h in block])])
        q, k = qk_rows(r.dim, chosen, r.head_dim)
        w, b = r.source_sd[f"blocks.{layer}.attn.qkv.weight"], r.source_sd.get(f"blocks.{layer}.attn.qkv.bias")
        r.sd[f"blocks.{layer}.attn.qk.weight"] = torch.cat([w[q], w[k]])
        if b is not None and f"blocks.{layer}.attn.qk.bias" in r.sd:
            r.sd[f"blocks.{layer}.attn.qk.bias"] = torch.cat([b[q], b[k]])
        return [{"layer": layer, "kind": str(spec), "maps_from_heads": chosen}]

    def vit_dense_weights(self, spec, num_heads):
        return "all" if (spec.arg or 1) == num_heads else "values"  # reuse:H is a fused qkv

    def vit_source_needs(self, spec, num_heads):
        return "all"  # the maps start from the source heads' q/k rows, chosen by their maps

register_kind(Reuse())
