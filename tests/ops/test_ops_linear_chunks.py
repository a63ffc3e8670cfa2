"""The chunked inference paths of the linear ops (`CHUNK_BYTES` at a time): memory stays a few
chunks and float64 stays float64. Written against the mutants mutmut left alive in ops/linear.py (docs/testing.md)."""

import pytest
import torch
from opscheck import assert_close, qkv

import attnreuse.ops.linear as linear_mod
from attnreuse import ops
from attnreuse.measure import measure_peak_bytes
from attnreuse.ops import reference


def test_token_centred_keys_are_centred_one_chunk_at_a_time(monkeypatch):
    """No second [BH, M, Dk] tensor: the centred keys live in a scratch of CHUNK_BYTES."""
    chunk = 64 << 10
    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", chunk)
    q, k, v = qkv(1, 4, 4, 1, 8192, 16, 16, torch.float32, requires_grad=False)  # k: 2 MiB
    peak = measure_peak_bytes(lambda: ops.taylor_attention(q, k, v))
    assert peak < 4 * chunk, f"peak {peak} bytes: more than a few chunks (k itself is {k.numel() * 4})"
    assert_close("out", reference.taylor_attention(q.double(), k.double(), v.double()), ops.taylor_attention(q, k, v), 1e-4, 1e-5)


@pytest.mark.parametrize("center", ["tokens", "features", None])
def test_chunked_inference_keeps_float64(monkeypatch, center):
    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", 300)
    q, k, v = qkv(2, 2, 4, 9, 23, 4, 3, torch.float64, requires_grad=False)
    out = ops.taylor_attention(q, k + 3, v, center=center)
    assert out.dtype == torch.float64
    assert_close("out", reference.taylor_attention(q, k + 3, v, center=center), out, 1e-12, 1e-12)

