"""The operators, the plan layers and the hf host on a CUDA device (skipped where there is none).

CI has no GPU; these run where one is lent (`pytest tests/test_cuda.py`). Each path is checked
against the float64 reference computed on the CPU, forward and backward.
"""

from __future__ import annotations

import pytest
import torch

from attnreuse import ops
from attnreuse.ops import reference, use_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("backend", ["tiled", "dense", "auto"])
@pytest.mark.parametrize("hq, hv", [(1, 8), (2, 8), (8, 8)])
def test_softmax_attention_on_cuda_matches_the_reference(backend, hq, hv):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, hq, 300, 32, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, hv, 300, 32, generator=g, dtype=torch.float64)
    bias = torch.zeros(2, 1, 1, 300, dtype=torch.float64)
    bias[1, ..., 250:] = -1e4
    bias[0, ..., :50] = torch.randn(50, generator=g, dtype=torch.float64)
    cq, ck, cv, cb = (t.float().cuda().requires_grad_() for t in (q, k, v, bias))
    with use_backend(backend):
        out = ops.softmax_attention(cq, ck, cv, scale=0.2, bias=cb, tile=64)
    want = reference.softmax_attention(q, k, v, scale=0.2, bias=bias)
    torch.testing.assert_close(out.double().cpu(), want, rtol=2e-3, atol=2e-3)
    out.sum().backward()
    qr, kr, vr, br = (t.clone().requires_grad_() for t in (q, k, v, bias))
    reference.softmax_attention(qr, kr, vr, scale=0.2, bias=br).sum().backward()
    for name, a, b in (("dq", cq, qr), ("dk", ck, kr), ("dv", cv, vr), ("dbias", cb, br)):
        torch.testing.assert_close(a.grad.double().cpu(), b.grad, rtol=5e-3, atol=5e-3, msg=name)


def test_taylor_attention_on_cuda_matches_the_reference():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 200, 16, generator=g, dtype=torch.float64) for _ in range(3))
    want = reference.taylor_attention(q, k, v, scale=0.25)
    out = ops.taylor_attention(q.float().cuda(), k.float().cuda(), v.float().cuda(), scale=0.25)
    torch.testing.assert_close(out.double().cpu(), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("center", ["tokens", "features"])
def test_chunked_linear_inference_on_cuda(monkeypatch, center):
    """Many key chunks: every scratch and accumulator is made on q's device."""
    import attnreuse.ops.linear as linear_mod

    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", 4096)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 100, 16, generator=g, dtype=torch.float64) for _ in range(3))
    want = reference.taylor_attention(q, k + 2, v, center=center)
    out = ops.taylor_attention(q.float().cuda(), (k + 2).float().cuda(), v.float().cuda(), center=center)
    torch.testing.assert_close(out.double().cpu(), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ops.BACKENDS)
@pytest.mark.parametrize("n, with_bias", [(4, False), (300, False), (300, True)])
def test_a_nan_query_row_gives_a_nan_output_row_on_cuda(backend, dtype, n, with_bias):
    """NaN in, NaN out on CUDA too, whichever fused SDPA kernel torch picks (flash, efficient, math)."""
    q, k, v = (torch.randn(2, 4, n, 64, device="cuda", dtype=dtype) for _ in range(3))
    bias = torch.randn(1, 1, n, n, device="cuda", dtype=dtype) if with_bias else None
    q[1, 2, 3, 5] = float("nan")
    with use_backend(backend):
        out = ops.softmax_attention(q, k, v, bias=bias)
    nan_rows = out.isnan().any(-1)
    assert nan_rows[1, 2, 3] and out[1, 2, 3].isnan().all(), backend
    assert nan_rows.sum() == 1, f"{backend}: NaN rows {nan_rows.nonzero().tolist()}"


@pytest.mark.parametrize("plan", ["mha", "mha,share,mha,share", "reuse", "taylor", "mha,skip,mha,mha"])
def test_hf_plans_on_cuda_match_the_cpu(plan):
    transformers = pytest.importorskip("transformers")
    import attnreuse.hf as arhf

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64)
    model = arhf.convert(transformers.BertModel(cfg).eval(), plan)
    ids = torch.randint(5, 60, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 12:] = 0
    with torch.no_grad():
        cpu = model(input_ids=ids, attention_mask=mask).last_hidden_state
        gpu = model.cuda()(input_ids=ids.cuda(), attention_mask=mask.cuda()).last_hidden_state.cpu()
    real = mask.bool()
    torch.testing.assert_close(gpu[real], cpu[real], rtol=1e-3, atol=1e-3)
