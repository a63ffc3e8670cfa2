"""hf analyze scores `taylor` and `kvpool` by the cosine of each layer's softmax maps with the maps
those kinds would apply, which are exact functions of the softmax map (`taylor_map`, `kvpool_map`):
checked here against the kinds' own attention on the same queries, keys and values, with padding."""

from __future__ import annotations

import pytest
import torch

from attnreuse.hf.analyze import kvpool_map, taylor_map
from attnreuse.layers.token_attention import TaylorSelfAttention
from attnreuse.plan.kvpool import _attend, pool_keys_values

B, H, N, D = 2, 3, 11, 8
SCALE = D**-0.5


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=torch.float64) for _ in range(3))
    real = torch.arange(N)[None] < torch.tensor([N, 7])[:, None]  # the second sequence is padded
    bias = torch.zeros(B, 1, 1, N, dtype=torch.float64).masked_fill(~real[:, None, None], float("-inf"))
    a = torch.softmax(SCALE * q @ k.transpose(-1, -2) + bias, dim=-1)
    return q, k, v, real, a


def test_the_taylor_map_is_what_taylor_attention_applies():
    q, k, v, real, a = _inputs()
    core = TaylorSelfAttention(H * D, H).double()
    core.scale = SCALE
    want = core._attend(q, k, v, real)
    rows = real[:, None, :, None].expand(B, H, N, D)
    torch.testing.assert_close((taylor_map(a, real) @ v)[rows], want[rows])


@pytest.mark.parametrize("pool", [2, 3, 4])
def test_the_kvpool_map_is_what_kvpool_attention_applies(pool):
    q, k, v, real, a = _inputs(pool)
    pk, pv, bias = pool_keys_values(k, v, pool, real)
    want = _attend(q, pk, pv, SCALE, bias)
    rows = real[:, None, :, None].expand(B, H, N, D)
    got = kvpool_map(a, real, pool)
    torch.testing.assert_close((got @ v)[rows], want[rows])
    assert torch.allclose(got.sum(-1), torch.ones(B, H, N, dtype=torch.float64))  # a softmax map's rows
