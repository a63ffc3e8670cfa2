"""The token-sequence cores' default scale is the papers' 1 / sqrt(head width): checked against the
reference's own default, not against the layer's `scale` attribute (mutmut found a changed
exponent unnoticed when the tests passed `scale=core.scale`)."""

import torch

from attnreuse.layers.token_attention import MapSelfAttention, TaylorSelfAttention
from attnreuse.ops import reference


def _heads(t, h):
    B, N, C = t.shape
    return t.view(B, N, h, C // h).transpose(1, 2)


def _merge(t):
    B, H, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, H * d)


def test_taylor_core_default_scale_is_the_papers():
    core = TaylorSelfAttention(16, 4).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    q, k, v = (_heads(getattr(core, p)(x), 4) for p in ("query", "key", "value"))
    torch.testing.assert_close(core(x), _merge(reference.taylor_attention(q, k, v, center="tokens")), rtol=1e-10, atol=1e-10)


def test_map_core_default_scale_is_the_papers():
    core = MapSelfAttention(24, 6, qk_heads=2, qk_dim=16).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    q, k, v = _heads(core.query(x), 2), _heads(core.key(x), 2), _heads(core.value(x), 6)
    torch.testing.assert_close(core(x), _merge(reference.softmax_attention(q, k, v)), rtol=1e-10, atol=1e-10)
