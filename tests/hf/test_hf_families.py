"""Every `transformers` family a host names, on a tiny random model of it: the mha plan reproduces the
original (padding included), reuse:H (one map per head) too, and the longest sequence the host
allows is the longest the model takes (the position-id offset of RoBERTa-style embeddings)."""

from __future__ import annotations

import pytest
import torch

import attnreuse.hf as arhf
from attnreuse.hf.hosts import host_for, max_tokens
from attnreuse.hf.images import image_tokens

from hfutil import SIZES, TEXT, VISION, WORDS, family_model, family_text_batch, tiny_tokenizer

transformers = pytest.importorskip("transformers")

def _saved(model_type: str, tmp_path, **overrides):
    """A saved tiny model of `model_type` with a tokenizer that, as its family's own, gives no token_type_ids."""
    directory = tmp_path / f"tiny-{model_type}"
    family_model(model_type, **overrides).save_pretrained(directory)
    tok = tiny_tokenizer(tmp_path)
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(directory)
    return directory


def test_the_families_are_the_hosts_families():
    assert {"bert", "roberta", "distilbert", "ernie", "xlm-roberta-xl"} <= set(TEXT)
    assert {"vit", "deit", "dinov2"} <= set(VISION)


@pytest.mark.parametrize("model_type", TEXT)
def test_text_family_mha_and_reuse_per_head_are_exact(tmp_path, model_type):
    model = family_model(model_type)
    batch = family_text_batch(tmp_path)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        for plan, atol in (("mha", 1e-5), ("reuse:4", 1e-4)):
            out = arhf.convert(model, plan)(**batch).last_hidden_state
            torch.testing.assert_close(out[real], ref[real], rtol=0, atol=atol, msg=f"{model_type} {plan}")
    # the host's length limit is the model's: max_tokens runs, one more is past its positions
    # (rotary and DeBERTa's relative positions have no table to run past: the limit is the length
    # the model was trained to)
    n = max_tokens(model.config)
    ids = torch.full((1, n), 5)
    with torch.no_grad():
        assert model(input_ids=ids).last_hidden_state.shape[1] == n
        if host_for(model.config).rotary is None and not host_for(model.config).relative:
            with pytest.raises((IndexError, RuntimeError, ValueError)):
                model(input_ids=torch.full((1, n + 1), 5))


@pytest.mark.parametrize("model_type", VISION)
def test_vision_family_mha_and_reuse_per_head_are_exact(model_type):
    model = family_model(model_type)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(pixel_values=x).last_hidden_state
        assert ref.shape[1] == image_tokens(model.config)  # the length the jobs cost and time at
        for plan, atol in (("mha", 1e-5), ("reuse:4", 1e-4)):
            torch.testing.assert_close(arhf.convert(model, plan)(pixel_values=x).last_hidden_state, ref,
                                       rtol=0, atol=atol, msg=f"{model_type} {plan}")
        assert arhf.convert(model, "mha,share,reuse,skip")(pixel_values=x).last_hidden_state.shape == ref.shape


@pytest.mark.parametrize("model_type, overrides, plan, speed", [
    # a DistilBERT directory as a user has one (its tokenizer gives no token_type_ids)
    ("distilbert", {}, "mha,share,reuse,taylor", False),
    # ModernBERT: rotary positions, a fused Wqkv, sliding-window layers; every kind that forms scores
    # from rotated queries and keys, timed in PyTorch and ONNX Runtime
    ("modernbert", {}, "reuse,share,taylor,kvpool", True),
    # EuroBERT: grouped-query attention (2 kv heads for 4 query heads), rotary heads, no biases
    ("eurobert", {"num_key_value_heads": 2}, "mha,share,reuse,skip", False),
    # DeBERTa-v3's layout: relative positions in every layer's scores, timed in PyTorch and ONNX Runtime
    ("deberta-v2", {}, "reuse,share,reuse:2,taylor", True),
])
def test_family_through_the_jobs(tmp_path, capsys, text_file, model_type, overrides, plan, speed):
    """analyze, convert, distil, evaluate, export to ONNX Runtime."""
    from attnreuse.cli import main

    directory = _saved(model_type, tmp_path, **overrides)
    assert main(["hf", "analyze", "--model", str(directory), "--text", str(text_file), "--texts", "16",
                 "--output", str(tmp_path / "a")]) == 0
    conv = tmp_path / "conv"
    assert main(["hf", "convert", "--model", str(directory), "--plan", plan, "--text", str(text_file),
                 "--output", str(conv)]) == 0
    run = tmp_path / "run"
    assert main(["hf", "distill", "--teacher", str(directory), "--init", str(conv), "--text", str(text_file),
                 "--steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--output", str(run)]) == 0
    timing = ["--tokens", "16", "--rounds", "2", "--repeats", "2", "--threads", "1", "--runtimes", "eager,ort"]
    assert main(["hf", "eval", "--teacher", str(directory), str(conv), str(run), "--text", str(text_file),
                 *(timing if speed else ["--no-speed"])]) == 0
    assert main(["hf", "export", str(run), "--output", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    recorded = plan.replace("kvpool", "kvpool:2")  # the default pool is written into the plan
    assert f"plan {recorded}: zero-shot cosine" in out and "ONNX Runtime vs PyTorch max |diff|" in out


def test_grouped_query_attention_gives_every_query_head_its_kv_heads_rows(tmp_path):
    """EuroBERT with 2 kv heads for 4 query heads: mha and reuse:4 reproduce it (each query head
    reads the kv head transformers' repeat_kv gives it), and a kv width that does not divide the
    query heads is refused by name."""
    from attnreuse.hf.hosts import _per_query_head

    model = family_model("eurobert", num_key_value_heads=2)
    assert model.layers[0].self_attn.k_proj.out_features == 16
    batch = family_text_batch(tmp_path)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        for plan, atol in (("mha", 1e-5), ("reuse:4", 1e-4)):
            out = arhf.convert(model, plan)(**batch).last_hidden_state
            torch.testing.assert_close(out[real], ref[real], rtol=0, atol=atol, msg=plan)
    rows = torch.arange(16.0)[:, None].expand(16, 3)  # 2 kv heads of 8 -> 4 query heads
    assert _per_query_head(rows, 4, 32, "t")[:, 0].tolist() == [*range(8), *range(8), *range(8, 16), *range(8, 16)]
    for width in (24, 4):  # 3 kv heads do not divide 4 query heads; 4 is not a whole head of 8
        with pytest.raises(ValueError, match=f"eurobert: a key/value projection of width {width} "):
            _per_query_head(torch.zeros(width, 32), 4, 32, "eurobert")


def test_deberta_relative_terms_come_from_each_cores_own_queries_and_keys(tmp_path):
    """DeBERTa (v3 layout): mha is exact only with the c2p / p2c terms (without them it misses by
    far); every kind runs; separate position projections (share_att_key=False) are refused by name."""
    from attnreuse.layers.token_attention import MapSelfAttention

    model = family_model("deberta-v2")
    batch = family_text_batch(tmp_path)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        exact = arhf.convert(model, "mha")
        torch.testing.assert_close(exact(**batch).last_hidden_state[real], ref[real], rtol=0, atol=1e-5)
        cores = [m for m in exact.modules() if isinstance(m, MapSelfAttention)]
        assert len(cores) == 4 and all(c.score_term is not None for c in cores)
        for core in cores:
            core.score_term = None
        assert (exact(**batch).last_hidden_state[real] - ref[real]).abs().max() > 0.1
        mixed = arhf.convert(model, "reuse:2,share,taylor,kvpool")(**batch).last_hidden_state
        assert mixed.shape == ref.shape and torch.isfinite(mixed).all()
    with pytest.raises(ValueError, match="deberta-v2 with share_att_key=False is not supported: separate position"):
        arhf.convert(family_model("deberta-v2", share_att_key=False), "mha")


def test_mpnet_relative_position_bias_reaches_the_kinds_that_form_scores(tmp_path):
    """MPNet adds a per-head relative-position bias to every layer's scores: mha keeps it exact on
    the tiled backend too; G maps take the mean bias of the heads each serves."""
    from attnreuse.hf.modules import PlanAttention, PlanState
    from attnreuse.layers.token_attention import MapSelfAttention
    from attnreuse.ops import use_backend
    from attnreuse.plan import LayerSpec

    model = family_model("mpnet")
    batch = family_text_batch(tmp_path)
    real = batch["attention_mask"].bool()
    with torch.no_grad(), use_backend("tiled"):
        out = arhf.convert(model, "mha")(**batch).last_hidden_state
    with torch.no_grad():
        torch.testing.assert_close(out[real], model(**batch).last_hidden_state[real], rtol=0, atol=1e-5)
    layer = PlanAttention(MapSelfAttention(8, 4, qk_heads=2), LayerSpec("reuse", 2), 0, None, False, PlanState(),
                          score_bias=(0, "position_bias"))
    position = torch.randn(1, 4, 3, 3)
    mask = torch.tensor([0.0, 0.0, -1e9]).view(1, 1, 1, 3)
    got = layer._grouped(mask, position)
    torch.testing.assert_close(got, mask + position.view(1, 2, 2, 3, 3).mean(2))
    assert layer._grouped(None, position).shape == (1, 2, 3, 3) and layer._grouped(mask, None) is mask


def test_mpnet_through_the_jobs_against_its_eager_original(tmp_path, capsys, text_file):
    """MPNet has no SDPA path in transformers: the original loads, and is timed, on eager attention."""
    import json

    from attnreuse.cli import main

    directory = _saved("mpnet", tmp_path)
    conv = tmp_path / "conv"
    assert main(["hf", "convert", "--model", str(directory), "--plan", "mha", "--text", str(text_file),
                 "--output", str(conv)]) == 0
    assert "zero-shot cosine 1.0000" in capsys.readouterr().out
    assert main(["hf", "eval", "--teacher", str(directory), str(conv), "--text", str(text_file), "--tokens", "16",
                 "--rounds", "2", "--repeats", "2", "--threads", "1", "--json", str(tmp_path / "e.json")]) == 0
    speed = json.loads((tmp_path / "e.json").read_text())["speed"]
    assert {s["model"] for s in speed} == {"original (eager)", str(conv)}
    assert all(s["baseline"] == "original (eager)" for s in speed)


def test_a_clip_model_points_at_its_image_tower():
    """A whole CLIPModel (text tower causal, vision tower not) is refused with the class that loads
    the supported tower; before, it read 'must be a transformers PreTrainedModel'."""
    config = transformers.CLIPConfig(text_config=dict(SIZES), vision_config=dict(SIZES, image_size=16, patch_size=4))
    with pytest.raises(ValueError, match="model_type 'clip' is not supported .its image tower is: CLIPVisionModel"):
        arhf.convert(transformers.CLIPModel(config), "mha")


@pytest.mark.parametrize("composite", ["clip", "siglip"])
def test_the_jobs_take_a_whole_clip_or_siglip_directory_by_its_image_tower(tmp_path, capsys, composite):
    """A saved CLIPModel / SiglipModel (as released) was refused by every job; the jobs now load its
    image tower from it, the model a user of its image features runs."""
    from attnreuse.cli import main

    cls, config_cls, tower = {"clip": (transformers.CLIPModel, transformers.CLIPConfig, transformers.CLIPVisionModel),
                              "siglip": (transformers.SiglipModel, transformers.SiglipConfig,
                                         transformers.SiglipVisionModel)}[composite]
    text = dict(SIZES, vocab_size=len(WORDS) + 5, max_position_embeddings=16)
    torch.manual_seed(0)
    directory = tmp_path / composite
    cls(config_cls(text_config=text, vision_config=dict(SIZES, image_size=16, patch_size=4))).save_pretrained(directory)
    conv = tmp_path / "conv"
    assert main(["hf", "convert", "--model", str(directory), "--plan", "mha", "--output", str(conv)]) == 0
    assert "zero-shot cosine 1.0000" in capsys.readouterr().out
    converted = arhf.load(conv)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = tower.from_pretrained(directory).eval()(pixel_values=x).last_hidden_state
        torch.testing.assert_close(converted(pixel_values=x).last_hidden_state, want, rtol=0, atol=1e-5)
    assert main(["hf", "eval", "--teacher", str(directory), str(conv), "--no-speed"]) == 0


def test_rotary_projection_rotates_as_transformers_does():
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    from attnreuse.hf.modules import PlanState, RotaryLinear

    torch.manual_seed(0)
    linear, state = torch.nn.Linear(32, 16), PlanState()
    rotary = RotaryLinear(linear, 8, state)
    assert rotary.weight is linear.weight and set(dict(rotary.named_parameters())) == {"weight", "bias"}
    x, angles = torch.randn(2, 5, 32), torch.rand(2, 5, 4) * 6
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    heads = linear(x).view(2, 5, 2, 8).transpose(1, 2)
    want, _ = apply_rotary_pos_emb(heads, heads, cos, sin)
    state.rotary = (cos, sin)
    torch.testing.assert_close(rotary(x), want.transpose(1, 2).reshape(2, 5, 16))
    state.rotary = None
    with pytest.raises(ValueError, match="without the layer's position embeddings"):
        rotary(x)


def test_a_sliding_window_mask_keeps_every_real_key():
    """ModernBERT's local layers get a band [B, 1, N, N]: the key mask (taylor, kvpool, skip read it)
    is the padding alone, not the first query's window."""
    from attnreuse.layers.token_attention import key_mask_from_bias

    n, real = 10, torch.tensor([10, 7])
    idx = torch.arange(n)
    band = (idx[:, None] - idx[None]).abs() <= 2
    keep = band[None, None] & (idx[None, :] < real[:, None])[:, None, None, :]
    bias = torch.zeros(2, 1, n, n).masked_fill(~keep, torch.finfo(torch.float32).min)
    want = idx[None] < real[:, None]
    assert torch.equal(key_mask_from_bias(bias, n), want) and torch.equal(key_mask_from_bias(keep, n), want)


def test_the_analysis_costs_debertas_relative_terms():
    """`hf analyze` costs each kind on the host's layer: a DeBERTa layer that forms scores from G
    maps' queries and keys of width W = G x head size also projects the 2S relative embeddings by
    its query and key (2 x 2S x C x W MACs) and multiplies them by every query and key (2 x N x 2S
    x W); share, which forms no scores, pays neither."""
    from attnreuse.hf.analyze import layer_macs
    from attnreuse.hf.disentangled import costing_term
    from attnreuse.hf.hosts import host_for

    model = family_model("deberta-v2")
    host = host_for(model.config)
    module = host.attention_modules(model)[0][2]
    src, n, span, dim = host.source(module, 4), 12, module.pos_ebd_size, 32
    assert span == 8

    def prepare(core):
        costing_term(core, module, n)

    for kind, width in (("mha", 32), ("reuse:2", 16), ("reuse", 8)):
        extra = 2 * (2 * span * dim * width) + 2 * (n * 2 * span * width)
        assert layer_macs(src, kind, n, prepare) - layer_macs(src, kind, n) == extra, kind
    assert layer_macs(src, "share", n, prepare) == layer_macs(src, "share", n)


@pytest.mark.parametrize("shared", [False, True])
def test_beit_relative_position_bias_reaches_the_kinds_that_form_scores(shared):
    """BEiT hands each layer's attention its relative-position bias [1, H, N, N] as the mask (a
    table per layer, or one shared): mha and reuse:H reproduce the model with the tables drawn at
    random (they start at zero), and the bias matters (zeroing the tables moves the output). No layer
    scale and larger weights than BEiT's defaults, so the attention branch shows in the output."""
    which = "use_shared_relative_position_bias" if shared else "use_relative_position_bias"
    model = family_model("beit", **{which: True}, layer_scale_init_value=0.0, initializer_range=0.3)
    tables = [p for n, p in model.named_parameters() if "relative_position_bias_table" in n]
    assert len(tables) == (1 if shared else 4)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for t in tables:
            t.normal_(0, 2)
        ref = model(pixel_values=x).last_hidden_state
        for plan, atol in (("mha", 1e-5), ("reuse:4", 1e-4)):
            torch.testing.assert_close(arhf.convert(model, plan)(pixel_values=x).last_hidden_state, ref, rtol=0, atol=atol,
                                       msg=plan)
        mixed = arhf.convert(model, "mha,share,reuse:2,taylor")(pixel_values=x).last_hidden_state
        assert mixed.shape == ref.shape and torch.isfinite(mixed).all()
        for t in tables:
            t.zero_()
        assert (model(pixel_values=x).last_hidden_state - ref).abs().max() > 0.1
