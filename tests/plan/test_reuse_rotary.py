"""Reuse Attention retrofitted on a rotary host (ModernBERT): the new map's query and key are
rotated by position as the heads' were, so its factors come from each frequency pair's complex
form (`attnreuse.plan.reuse`, module doc), not from one real SVD of the whole mean form."""

from __future__ import annotations

import torch

from attnreuse.plan.registry import SourceAttention
from attnreuse.plan.reuse import mean_score_factors, rotary_score_factors

C, H = 32, 4
D = C // H


def _source(seed: int = 0, same_heads: bool = False) -> SourceAttention:
    g = torch.Generator().manual_seed(seed)
    w = {k: torch.randn(C, C, generator=g, dtype=torch.float64) for k in ("query", "key", "value")}
    b = {k: torch.randn(C, generator=g, dtype=torch.float64) for k in ("query", "key", "value")}
    if same_heads:
        for k in ("query", "key"):
            w[k], b[k] = w[k][:D].repeat(H, 1), b[k][:D].repeat(H)
    return SourceAttention(C, H, w, b, D**-0.5, rotary=True)


def _rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [N, D] rotated by RoPE (rotate-half layout, base 10000), as transformers does."""
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    angles = positions[:, None] * inv[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    return x * cos + torch.cat([-x[:, D // 2:], x[:, : D // 2]], -1) * sin


def _rows(src, name, h):
    return torch.cat([src.weights[name][h * D:(h + 1) * D], src.biases[name][h * D:(h + 1) * D, None]], 1)


def _scores(P, Q, x, positions, scale=1.0):
    """[N, N] scores of one rotary head with augmented query / key rows P, Q [D, C + 1]."""
    xa = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    return scale * _rope(xa @ P.T, positions) @ _rope(xa @ Q.T, positions).T


def _inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(12, C, generator=g, dtype=torch.float64), torch.randperm(40, generator=g)[:12].double()


def test_one_head_is_reproduced_at_every_position():
    src, (x, positions) = _source(), _inputs()
    for h in range(H):
        P, Q = rotary_score_factors(src, range(h, h + 1))
        want = _scores(_rows(src, "query", h), _rows(src, "key", h), x, positions, src.scale)
        torch.testing.assert_close(_scores(P, Q, x, positions), want, rtol=0, atol=1e-10)
        # a real factorisation of the same form does not survive the rotation
        P, Q = mean_score_factors(src, range(h, h + 1), D)
        assert (_scores(P, Q, x, positions) - want).abs().max() > 1e-3


def test_heads_alike_give_their_map_exactly():
    src, (x, positions) = _source(same_heads=True), _inputs()
    P, Q = rotary_score_factors(src, range(H))
    want = _scores(_rows(src, "query", 0), _rows(src, "key", 0), x, positions, src.scale)
    torch.testing.assert_close(_scores(P, Q, x, positions), want, rtol=0, atol=1e-10)


def _frequency_error(src, P, Q) -> float:
    """sum_f ||M_f - p_f conj(q_f)^T||_F^2: the squared error of each frequency's complex mean form."""
    half, total = D // 2, 0.0
    for f in range(half):
        form = sum(torch.outer(torch.complex(_rows(src, "query", h)[f], _rows(src, "query", h)[f + half]),
                               torch.complex(_rows(src, "key", h)[f], -_rows(src, "key", h)[f + half]))
                   for h in range(H)) * (src.scale / H)
        approx = torch.outer(torch.complex(P[f], P[f + half]), torch.complex(Q[f], -Q[f + half]))
        total += float((form - approx).abs().square().sum())
    return total


def test_the_group_factors_are_the_best_per_frequency():
    """For any rotary head the mean score's error is the sum over frequencies of its form's error:
    the factors minimise each term, so they beat the real SVD's, and any perturbation of them."""
    for seed in range(3):
        src = _source(seed)
        P, Q = rotary_score_factors(src, range(H))
        best = _frequency_error(src, P, Q)
        assert best < _frequency_error(src, *mean_score_factors(src, range(H), D))
        g = torch.Generator().manual_seed(seed)
        for _ in range(4):
            dp, dq = (1e-3 * torch.randn(P.shape, generator=g, dtype=torch.float64) for _ in range(2))
            assert best <= _frequency_error(src, P + dp, Q + dq)
