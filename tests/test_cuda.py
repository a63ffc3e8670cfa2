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
@pytest.mark.parametrize("backend", [b for b in ops.BACKENDS if b != "native"])  # native: CPU only
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


@pytest.mark.parametrize("hq, hv", [(1, 8), (8, 8)])
def test_tiled_map_out_on_cuda_matches_the_reference(hq, hv):
    """The FLAT kernel that also writes the map: out and map forward, gradients through both."""
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(2, hq, 300, 32, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, hv, 300, 32, generator=g, dtype=torch.float64)
    bias = torch.zeros(2, 1, 1, 300, dtype=torch.float64)
    bias[1, ..., 250:] = -1e4
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    want_map = reference.attention_map(qr, kr, scale=0.2, bias=bias)
    want = reference.apply_map(want_map, vr)
    cq, ck, cv = (t.float().cuda().requires_grad_() for t in (q, k, v))
    with use_backend("tiled"):
        out, attn = ops.softmax_attention(cq, ck, cv, scale=0.2, bias=bias.float().cuda(), tile=64, return_map=True)
    torch.testing.assert_close(out.double().cpu(), want, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(attn.double().cpu(), want_map, rtol=2e-3, atol=2e-3)
    seed_map = torch.randn(want_map.shape, generator=g, dtype=torch.float64)
    (out.sum() + (attn * seed_map.float().cuda()).sum()).backward()
    (want.sum() + (want_map * seed_map).sum()).backward()
    for name, a, b in (("dq", cq, qr), ("dk", ck, kr), ("dv", cv, vr)):
        torch.testing.assert_close(a.grad.double().cpu(), b.grad, rtol=5e-3, atol=5e-3, msg=name)


def test_part_timer_on_cuda_sums_to_the_marked_span():
    """CUDA events per mark, one synchronisation when read: every part, rest included, >= 0, and
    their sum is the span from start() to stop()."""
    from attnreuse.layers import parts
    from attnreuse.layers.token_attention import MapSelfAttention
    from attnreuse.measure import PartTimer

    core = MapSelfAttention(64, 4).cuda()
    x = torch.randn(2, 512, 64, device="cuda")
    timer = PartTimer("cuda")
    timer.watch(core, "attention", 0)
    timer.watch(core.query, "qk_proj", 0)
    span = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
    with torch.no_grad(), use_backend("dense"), parts.recording(timer):
        core(x)  # warm-up
        timer.reset()
        span[0].record()
        timer.start()
        core(x)
        torch.tanh(x)
        timer.stop()
        span[1].record()
    totals = timer.totals_s
    assert {("attention", 0), ("qk_proj", 0), ("scores_softmax", 0), ("av", 0), ("rest", None)} <= set(totals)
    assert all(v >= 0 for v in totals.values())
    assert sum(totals.values()) <= span[0].elapsed_time(span[1]) / 1e3 * 1.01 + 1e-5


def test_bench_study_runs_on_cuda(tmp_path):
    """`bench study --device cuda` on a tiny random Whisper encoder: records on the GPU with the
    breakdown's parts adding up and the GPU's peak memory."""
    pytest.importorskip("transformers")
    from transformers import WhisperConfig

    from attnreuse.bench import study

    cfg = tmp_path / "whisper.json"
    WhisperConfig(d_model=64, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
                  decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=64,
                  vocab_size=64).to_json_file(str(cfg))
    config = study.StudyConfig(model=str(cfg), lengths=(32, 64), plans=("share2", "taylor"), device="cuda",
                               threads=1, rounds=1, repeats=2, warmup=1, breakdown_repeats=1, check_length=64,
                               output=str(tmp_path / "out"))
    records = study.run_study(config)
    assert {r["plan"] for r in records} == {"sdpa", "mha", "share2", "taylor"}
    for r in records:
        assert r["device"] == "cuda" and r["cuda_device"] and r["peak_bytes"] > 0
        assert sum(r[f"ms_{p}"] for p in study.PARTS) == pytest.approx(r["breakdown_total_ms"])
        assert r["breakdown_total_ms"] > 0 and r["instrumentation_overhead"] > 0
    assert (tmp_path / "out" / "report.md").stat().st_size > 0
