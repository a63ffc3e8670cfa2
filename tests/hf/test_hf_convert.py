"""attnreuse.hf.convert on tiny random encoders: exactness of mha, padding in every kind, save/load."""

from __future__ import annotations

import pytest
import torch

import attnreuse.hf as arhf
from attnreuse.hf.source import load_source

from hfutil import sentences, tiny_model, tiny_tokenizer

PLANS = ["mha", "reuse", "reuse:2", "taylor", "mha,share,mha,share", "mha,skip,skip,mha", "reuse,share,taylor,skip"]


def _batch(tmp_path, n=3):
    return tiny_tokenizer(tmp_path)(sentences(n), padding=True, return_tensors="pt")


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_mha_plan_equals_the_original_with_padding(tmp_path, kind):
    model = tiny_model(kind)
    batch = _batch(tmp_path, 4)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    converted = arhf.convert(model, "mha")
    with torch.no_grad():
        ref, out = model(**batch).last_hidden_state, converted(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], ref[real], rtol=0, atol=1e-5)


def test_mha_plan_on_the_tiled_backend_equals_the_original(tmp_path):
    from attnreuse.ops import use_backend

    model, batch = tiny_model("bert"), _batch(tmp_path, 4)
    converted = arhf.convert(model, "mha")
    with torch.no_grad(), use_backend("tiled"):
        out = converted(**batch).last_hidden_state
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], ref[real], rtol=0, atol=1e-5)


def test_reuse_with_one_map_per_head_is_exact(tmp_path):
    """reuse:H keeps H maps, each the rank-d factor of one head's own score form: the original."""
    model, batch = tiny_model("bert"), _batch(tmp_path, 4)
    converted = arhf.convert(model, "reuse:4")
    with torch.no_grad():
        ref, out = model(**batch).last_hidden_state, converted(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], ref[real], rtol=0, atol=1e-4)


@pytest.mark.parametrize("plan", PLANS)
def test_padding_does_not_change_real_tokens(tmp_path, plan):
    """Every kind: a text padded inside a batch gives what it gives alone."""
    model = arhf.convert(tiny_model("bert"), plan)
    tok = tiny_tokenizer(tmp_path)
    texts = sentences(4, seed=3)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
        for i, text in enumerate(texts):
            alone = model(**tok([text], return_tensors="pt")).last_hidden_state[0]
            torch.testing.assert_close(out[i, : len(alone)], alone, rtol=0, atol=2e-5)


@pytest.mark.parametrize("plan", ["mha", "reuse", "mha,share,mha,share", "taylor", "mha,skip,mha,mha"])
def test_vit_model_hosts_every_kind(plan):
    model = tiny_model("vit")
    converted = arhf.convert(model, plan)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = converted(pixel_values=x).last_hidden_state
    assert out.shape == (2, 17, 32) and torch.isfinite(out).all()
    if plan == "mha":
        with torch.no_grad():
            torch.testing.assert_close(out, model(pixel_values=x).last_hidden_state, rtol=0, atol=1e-5)


def test_convert_leaves_the_original_alone_and_records_the_plan(tmp_path):
    model = tiny_model("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = arhf.convert(model, "mha,share,mha,share")
    assert arhf.plan_of(model) is None
    assert arhf.plan_of(converted) == ["mha", "share", "mha", "share"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "layer.1.attention.self.core.value.weight" in "".join(converted.state_dict())
    assert not any(".1.attention.self.core.query" in k for k in converted.state_dict())


def test_save_and_load_round_trip(tmp_path):
    model, batch = tiny_model("bert"), _batch(tmp_path)
    converted = arhf.convert(model, "reuse,share,taylor,skip")
    arhf.save(converted, tmp_path / "out")
    again = arhf.load(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).last_hidden_state, converted(**batch).last_hidden_state, rtol=0, atol=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        arhf.save(converted, tmp_path / "out")


def test_attn_implementation_attnreuse_on_a_plain_model(tmp_path, model_dir):
    arhf.register()
    batch = _batch(tmp_path, 4)
    ref, _ = load_source(model_dir)
    from transformers import AutoModel

    ours = AutoModel.from_pretrained(model_dir, attn_implementation="attnreuse").eval()
    with torch.no_grad():
        a, b = ref(**batch).last_hidden_state, ours(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(b[real], a[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "plan, message",
    [
        ("mha,share", "plan has 2 entries but the bert model has 4 layers"),
        ("share", "plan\\[0\\]='share' has no earlier layer computing a softmax map"),
        ("skip,mha,mha,mha", "the first layer has no previous layer"),
        ("reuse:3", "G in 'reuse:G' must be a positive divisor of the 4 heads"),
        ("mha,mha,flash,mha", "unknown attention kind 'flash'"),
        ("mha:2", "'mha' takes no argument"),
    ],
)
def test_bad_plans_name_the_problem(plan, message):
    with pytest.raises(ValueError, match=message):
        arhf.convert(tiny_model("bert"), plan)


def test_unsupported_architecture_says_which_are():
    import transformers

    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported; supported: bert, roberta"):
        arhf.convert(gpt2, "mha")


@pytest.mark.parametrize("model_type, why", [
    ("deberta", "DeBERTa v1's attention .a fused in_proj. is not hosted; v2 and v3 checkpoints, model_type 'deberta-v2', are"),
    ("albert", "ALBERT applies one layer's weights in every layer"),
    ("data2vec-vision", "its attention takes no mask and owns its position bias, unlike BEiT's"),
])  # fmt: skip
def test_an_encoder_near_a_hosted_family_is_refused_with_the_reason(model_type, why):
    import transformers

    config = transformers.AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=64)
    with pytest.raises(ValueError, match=f"model_type '{model_type}' is not supported \\({why}.*\\); supported: bert"):
        arhf.convert(transformers.AutoModel.from_config(config), "mha")


def test_a_converted_model_is_not_converted_again():
    converted = arhf.convert(tiny_model("bert"), "reuse")
    with pytest.raises(ValueError, match="already follows plan"):
        arhf.convert(converted, "mha")
