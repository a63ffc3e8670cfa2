"""The `kvpool:R` kind (keys and values averaged over windows of R tokens), checked against a float64
reference written out here, against the dense layer where pooling loses nothing, and in every host:
the attnreuse ViT, `attnreuse convert`, transformers encoders (`attnreuse hf`) and `bench study`."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

from attnreuse.cli import main
from attnreuse.layers import Attention
from attnreuse.ops import use_backend
from attnreuse.plan import LayerSpec, SourceAttention, get_kind, parse_plan
from attnreuse.plan.kvpool import KVPoolAttention, KVPoolSelfAttention

PICO = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)
BACKENDS = ("dense", "tiled", "sdpa", "auto")


def reference(q, k, v, pool, scale, key_mask=None, keep=0):
    """Literal kvpool attention in float64. q: [B, H, N, d], k, v: [B, H, N, d], key_mask [B, N]
    (True = real). The first `keep` tokens are keys of their own; after them, each window of `pool`
    tokens becomes one key and one value, the means over its real tokens, and weighs as many tokens
    as it averages (score + log count); a window without a real token is no key at all."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, N, _ = k.shape
    out = torch.empty(B, H, N, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        real = [True] * N if key_mask is None else [bool(t) for t in key_mask[b]]
        windows = [[j] for j in range(keep)] + [list(range(s, min(s + pool, N))) for s in range(keep, N, pool)]
        keys, values, counts = [], [], []
        for window in windows:
            tokens = [j for j in window if real[j]]
            if tokens:
                keys.append(k[b][:, tokens].mean(1))
                values.append(v[b][:, tokens].mean(1))
                counts.append(len(tokens))
        keys, values = torch.stack(keys, 1), torch.stack(values, 1)  # [H, M, d]
        scores = scale * q[b] @ keys.transpose(-1, -2) + torch.tensor(counts, dtype=torch.float64).log()
        out[b] = torch.softmax(scores, -1) @ values
    return out


def _heads(t, heads):
    B, N, _ = t.shape
    return t.view(B, N, heads, -1).transpose(1, 2)


def _merge(t):
    B, H, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, H * d)


def _mask(N):
    """Three sequences: all real; the first 3 real (whole windows of padding after); holes at 2 and 3."""
    mask = torch.ones(3, N, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 2:4] = False
    return mask


def _core_reference(core, x, key_mask):
    H = core.num_heads
    q, k, v = (_heads(lin(x), H) for lin in (core.query, core.key, core.value))
    return _merge(reference(q, k, v, core.pool, core.scale, key_mask))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("N, pool", [(8, 2), (7, 2), (9, 4), (5, 3)])
@pytest.mark.parametrize("masked", [False, True])
def test_core_matches_the_float64_reference(backend, N, pool, masked):
    core = KVPoolSelfAttention(12, 3, pool).double()
    x = torch.randn(3, N, 12, dtype=torch.float64)
    key_mask = _mask(N) if masked else None
    with torch.no_grad(), use_backend(backend):
        out = core(x, key_mask)
        want = _core_reference(core, x, key_mask)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["dense", "tiled"])
def test_gradients_match_the_reference(backend):
    core = KVPoolSelfAttention(12, 3, 3).double()
    x = torch.randn(3, 7, 12, dtype=torch.float64, requires_grad=True)
    key_mask, g = _mask(7), torch.randn(3, 7, 12, dtype=torch.float64)
    params = [x, core.query.weight, core.key.weight, core.value.bias]
    with use_backend(backend):
        got = torch.autograd.grad((core(x, key_mask) * g).sum(), params)
    want = torch.autograd.grad((_core_reference(core, x, key_mask) * g).sum(), params)
    for name, a, b in zip(("x", "query.weight", "key.weight", "value.bias"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("prefix, patches, pool", [(1, 16, 2), (1, 15, 4), (2, 9, 2), (0, 6, 3)])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_vit_attention_keeps_the_prefix_tokens_and_matches_the_reference(prefix, patches, pool, qk_norm):
    attn = KVPoolAttention(12, 3, pool=pool, num_prefix_tokens=prefix, qkv_bias=True, qk_norm=qk_norm,
                           norm_layer=torch.nn.LayerNorm).double()
    x = torch.randn(2, prefix + patches, 12, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = attn.qkv(x).view(2, prefix + patches, 3, 3, 4).permute(2, 0, 3, 1, 4)
        want = attn.proj(_merge(reference(attn.q_norm(q), attn.k_norm(k), v, pool, attn.scale, keep=prefix)))
        torch.testing.assert_close(attn(x), want, rtol=1e-10, atol=1e-10)


def test_vit_attention_dropout_acts_in_training_only():
    attn = KVPoolAttention(12, 3, pool=2, num_prefix_tokens=1, attn_drop=0.5)
    plain = KVPoolAttention(12, 3, pool=2, num_prefix_tokens=1)
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(attn.eval()(x), plain(x), rtol=0, atol=0)
        attn.train()
        assert not torch.allclose(attn(x), plain(x))


def _source(dim=12, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {n: torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) for n in ("query", "key", "value")}
    b = {n: torch.randn(dim, generator=g, dtype=torch.float64) for n in ("query", "key", "value")}
    return SourceAttention(dim, heads, w, b, scale=(dim // heads) ** -0.5)


@pytest.mark.parametrize("pool", [2, 3])
def test_windows_of_one_repeated_token_give_the_dense_layer_exactly(pool):
    """A window holding one token c times is that token with weight c: with padding cutting windows
    and a short last window, kvpool (score + log count) is then multi-head attention itself."""
    src = _source()
    mha = get_kind("mha").retrofit(LayerSpec("mha"), src).double()
    pooled = get_kind("kvpool").retrofit(LayerSpec("kvpool", pool), src).double()
    x = torch.randn(3, 4, 12, dtype=torch.float64).repeat_interleave(pool, dim=1)[:, : 4 * pool - 1]
    key_mask = torch.ones(3, x.shape[1], dtype=torch.bool)
    key_mask[1, pool + 1 :] = False  # padding from inside the second window on
    bias = torch.zeros(3, 1, 1, x.shape[1], dtype=torch.float64).masked_fill(~key_mask[:, None, None], -1e300)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x, key_mask), mha(x, bias), rtol=1e-10, atol=1e-10)
        y = torch.randn_like(x)  # distinct tokens in a window: pooling changes the output
        assert not torch.allclose(pooled(y), mha(y))


def test_vit_class_token_weighs_one_token_among_pooled_windows():
    """The same on the ViT host: patches repeated in pairs behind a class token give the dense
    block's attention output (the class key weighs 1 token, each window 2)."""
    dense = Attention(12, 3, qkv_bias=True).double()
    pooled = KVPoolAttention(12, 3, pool=2, num_prefix_tokens=1, qkv_bias=True).double()
    pooled.load_state_dict(dense.state_dict())
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    x = torch.cat([x[:, :1], x[:, 1:].repeat_interleave(2, dim=1)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), dense(x), rtol=1e-10, atol=1e-10)


def test_removed_parts_are_what_the_mac_counter_sees():
    from attnreuse.hf.analyze import layer_macs

    src, N = _source(dim=32, heads=4), 64
    src = SourceAttention(32, 4, {k: w.float() for k, w in src.weights.items()},
                          {k: b.float() for k, b in src.biases.items()}, src.scale)
    for pool in (2, 4):
        removed = get_kind("kvpool").removed_parts(LayerSpec("kvpool", pool), 4)
        assert set(removed) == {"scores_softmax", "av"} and removed["av"] == removed["scores_softmax"] == 1 - 1 / pool
        scores_av = 2 * N * N * 32  # the dense scores and A.V
        assert layer_macs(src, "mha", N) - layer_macs(src, f"kvpool:{pool}", N) == removed["av"] * scores_av


@pytest.mark.parametrize("entry", ["kvpool:1", "kvpool:x", "kvpool:0", "kvpool:-2", "kvpool:2.5"])
def test_bad_pool_sizes_are_one_line_naming_the_entry(entry):
    with pytest.raises(ValueError) as err:
        parse_plan(["mha", entry], 2, 4, name="attn_plan")
    message = str(err.value)
    assert message.startswith(f"attn_plan[1]='{entry}': R in 'kvpool:R' must be an int >= 2") and "\n" not in message
    with pytest.raises(ValueError, match="pool must be an int >= 2"):
        KVPoolSelfAttention(8, 2, pool=1)


def test_the_default_is_written_out_and_other_kinds_name_it():
    assert parse_plan("kvpool", 2, 4) == (LayerSpec("kvpool", 2),) * 2
    assert [str(s) for s in parse_plan("mha,kvpool:4", 2, 4)] == ["mha", "kvpool:4"]
    with pytest.raises(ValueError, match=r"'share' takes no argument; only 'reuse' / 'kvpool' takes an argument \(reuse:G, kvpool:R\)"):
        parse_plan("mha,share:2", 2, 4)


def test_vit_plan_builds_trains_and_loads_a_dense_checkpoint():
    from attnreuse.models.vit import convert_state_dict

    model = timm.create_model("vit_attnreuse_pico_patch4_32", attn_plan="mha,kvpool,share,kvpool:4", **PICO)
    assert model.attn_plan == ("mha", "kvpool:2", "share", "kvpool:4") and model.blocks[0].emit_map
    out = model(torch.randn(2, 3, 16, 16))
    out.pow(2).mean().backward()
    for i in (1, 3):
        assert model.blocks[i].attn.qkv.weight.grad.abs().sum() > 0 and model.blocks[i].attn.proj.weight.grad is not None
    dense = timm.create_model("vit_attnreuse_pico_patch4_32", **PICO)
    target = timm.create_model("vit_attnreuse_pico_patch4_32", attn_plan="kvpool:2", **PICO)
    converted, report = convert_state_dict(dense.state_dict(), "kvpool:2", num_heads=2, target=target.state_dict())
    assert report.complete and not report.dropped
    target.load_state_dict(converted)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        pooled, full = target(x), dense(x)
    assert torch.isfinite(pooled).all() and not torch.allclose(pooled, full)


def test_convert_a_dense_run_to_kvpool(tmp_path, capsys):
    from attnreuse import runs

    kwargs = dict(PICO)
    source = timm.create_model("vit_attnreuse_pico_patch4_32", **kwargs)
    runs.write_model_spec(tmp_path / "dense", {"name": "vit_attnreuse_pico_patch4_32", "kwargs": kwargs})
    runs.save_checkpoint(tmp_path / "dense", 0, source.state_dict(), None, {"epoch": 0, "step": 0})
    plan = ["mha", "kvpool:2", "kvpool:4", "mha"]
    assert main(["convert", "--checkpoint", str(tmp_path / "dense"), "--plan", json.dumps(plan), "--calib-batches", "1",
                 "--batch-size", "8", "--output", str(tmp_path / "pooled")]) == 0
    record = json.loads((tmp_path / "pooled" / "convert.json").read_text())
    assert record["plan"] == plan and record["new_keys"] == [] and record["dropped"] == []
    model, _ = runs.load_model_dir(tmp_path / "pooled")
    assert model.attn_plan == tuple(plan)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    capsys.readouterr()


def _hf():
    """(transformers, attnreuse.hf); the test is skipped without transformers."""
    transformers = pytest.importorskip("transformers")
    import attnreuse.hf as arhf

    return transformers, arhf


def _tiny_bert():
    transformers, _ = _hf()
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertModel(config).eval()


@pytest.mark.parametrize("plan", ["kvpool", "kvpool:3", "mha,kvpool:2,share,kvpool:4"])
def test_hf_padding_does_not_change_real_tokens(plan):
    """A sequence padded inside a batch gives what it gives alone, for windows cut by the padding."""
    _, arhf = _hf()
    model = arhf.convert(_tiny_bert(), plan)
    lengths = [11, 6, 3, 9]
    ids = torch.randint(5, 40, (4, 11))
    mask = torch.arange(11)[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        for i, n in enumerate(lengths):
            alone = model(input_ids=ids[i : i + 1, :n]).last_hidden_state[0]
            torch.testing.assert_close(out[i, :n], alone, rtol=0, atol=2e-5)


def test_hf_convert_save_and_load_round_trip(tmp_path):
    _, arhf = _hf()
    bert = _tiny_bert()
    converted = arhf.convert(bert, "kvpool:2")
    assert arhf.plan_of(converted) == ["kvpool:2"] * 4
    keys = converted.state_dict()
    torch.testing.assert_close(keys["encoder.layer.2.attention.self.core.key.weight"],
                               bert.state_dict()["encoder.layer.2.attention.self.key.weight"], rtol=0, atol=0)
    ids = torch.randint(5, 40, (2, 9))
    arhf.save(converted, tmp_path / "pooled")
    again = arhf.load(tmp_path / "pooled")
    with torch.no_grad():
        a, b = again(input_ids=ids).last_hidden_state, converted(input_ids=ids).last_hidden_state
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.allclose(b, bert(input_ids=ids).last_hidden_state)


def test_hf_onnx_export_keeps_batch_and_length_dynamic(tmp_path):
    """The pooling has no shape arithmetic, so the graph traced on one padded batch serves others."""
    pytest.importorskip("onnxruntime")
    from attnreuse.hf.export import export_encoder, ort_encoder_session

    _, arhf = _hf()
    model = arhf.convert(_tiny_bert(), "kvpool:3")
    ids, mask = torch.randint(5, 40, (2, 10)), torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    export_encoder(model, tmp_path / "kvpool.onnx", {"input_ids": ids, "attention_mask": mask})
    session = ort_encoder_session(tmp_path / "kvpool.onnx", threads=1)
    ids, mask = torch.randint(5, 40, (3, 13)), torch.ones(3, 13, dtype=torch.long)
    mask[2, 5:] = 0
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=0, atol=1e-5)


def test_hf_whisper_encoder_hosts_kvpool():
    transformers, arhf = _hf()
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                                        num_mel_bins=8, max_source_positions=13, dropout=0.0, attention_dropout=0.0)
    encoder = WhisperEncoder(config).eval()
    converted = arhf.convert(encoder, "kvpool:4")  # 13 frames: windows of 4, 4, 4, 1
    with torch.no_grad():
        out = converted(input_features=torch.randn(2, 8, 26)).last_hidden_state
    assert out.shape == (2, 13, 32) and torch.isfinite(out).all()


def test_hf_cli_converts_and_rejects_a_bad_pool(tmp_path, capsys):
    transformers, arhf = _hf()
    directory = tmp_path / "bert"
    _tiny_bert().save_pretrained(directory)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(35))]) + "\n")
    transformers.BertTokenizerFast(vocab=str(vocab)).save_pretrained(directory)
    argv = ["hf", "convert", "--model", str(directory), "--no-eval", "--output"]
    assert main([*argv, str(tmp_path / "out"), "--plan", "kvpool:2"]) == 0
    assert "plan kvpool:2,kvpool:2,kvpool:2,kvpool:2" in capsys.readouterr().out
    assert arhf.plan_of(arhf.load(tmp_path / "out")) == ["kvpool:2"] * 4
    assert main([*argv, str(tmp_path / "bad"), "--plan", "kvpool:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "R in 'kvpool:R' must be an int >= 2" in err, err
    assert not (tmp_path / "bad").exists()


def test_bench_study_runs_kvpool_and_predicts_its_saving(tmp_path):
    transformers, _ = _hf()
    from attnreuse.bench import study

    assert study.plan_layers("kvpool", 4, 4) == ["kvpool:2"] * 4
    layers = [dict(qk_proj=2.0, scores_softmax=3.0, av=1.0, v_proj=1.0, out_proj=1.0, ffn=5.0)] * 4
    assert study.predicted_removed_ms(layers, ["kvpool:4"] * 4, 4) == pytest.approx(4 * 0.75 * 4.0)
    config_path = tmp_path / "whisper.json"
    transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                               num_mel_bins=8, max_source_positions=16).to_json_file(str(config_path))
    config = study.StudyConfig(model=str(config_path), lengths=(9,), plans=("kvpool:2",), threads=1, rounds=1,
                               repeats=1, warmup=1, breakdown_repeats=1, check_length=9, output=str(tmp_path / "o"))
    records = {r["plan"]: r for r in study.run_study(config)}
    assert list(records) == ["sdpa", "mha", "kvpool:2"]
    pooled = records["kvpool:2"]
    assert pooled["plan_layers"] == ["kvpool:2", "kvpool:2"]
    assert pooled["ms_scores_softmax"] > 0 and pooled["ms_av"] > 0 and pooled["ms_qk_proj"] > 0
    assert pooled["predicted_speedup_vs_mha"] > 1.0


def test_convert_plan_shorthand_fills_every_layer_with_kvpool():
    """`attnreuse convert --plan kvpool:2` is a plan for every layer, as for any kind that reads no
    earlier layer; share/skip alone stay layouts (mapshare:G / skipat)."""
    from attnreuse.train.convert import parse_target_plan

    assert parse_target_plan("kvpool:2", 3) == ["kvpool:2"] * 3
    assert parse_target_plan("kvpool", 2) == ["kvpool", "kvpool"]
    with pytest.raises(ValueError, match="neither a kind that can fill every layer"):
        parse_target_plan("bogus", 3)
