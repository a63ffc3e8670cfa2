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


def test_a_score_term_from_the_cores_queries_and_keys_is_added_to_the_scores():
    """A host's score term (DeBERTa's relative terms) sees the core's own q, k [B, G, N, d] and is
    added to the scores with the padding bias, on every backend, with and without a returned map;
    a term that returns None adds nothing."""
    import pytest

    from attnreuse.ops import use_backend

    for core in (MapSelfAttention(24, 6, qk_heads=2, qk_dim=16).double(), MapSelfAttention(24, 6).double()):
        G = core.qk_heads
        x = torch.randn(2, 7, 24, dtype=torch.float64)
        q, k, v = _heads(core.query(x), G), _heads(core.key(x), G), _heads(core.value(x), 6)
        seen = []

        def term(q_, k_):
            seen.append((q_, k_))
            return torch.tanh(q_ @ k_.transpose(-1, -2)) * 3.0  # [B, G, N, N], not a function of q.k alone

        core.score_term = term
        pad = torch.zeros(2, 1, 1, 7, dtype=torch.float64)
        pad[1, ..., 5:] = torch.finfo(torch.float64).min
        want_map = reference.attention_map(q, k, bias=pad + term(q, k))
        want = _merge(reference.apply_map(want_map, v))
        for backend in ("dense", "tiled", "auto") + (("sdpa",) if G == 6 else ()):
            with use_backend(backend):
                torch.testing.assert_close(core(x, pad), want, rtol=1e-10, atol=1e-10, msg=backend)
                torch.testing.assert_close(seen[-1][0], q)
                torch.testing.assert_close(seen[-1][1], k)
                if backend != "sdpa":
                    _, attn = core(x, pad, return_map=True)
                    torch.testing.assert_close(attn, want_map, rtol=1e-10, atol=1e-10, msg=backend)
        core.score_term = lambda q_, k_: None  # no term this call (a DeBERTa model run without relative inputs)
        plain = _merge(reference.softmax_attention(q, k, v, bias=pad))
        torch.testing.assert_close(core(x, pad), plain, rtol=1e-10, atol=1e-10)
    with pytest.raises(AttributeError):
        MapSelfAttention(8, 2).get_submodule("score_term")  # never a submodule: it holds no weights
