"""wav2vec2, HuBERT and Wav2Vec2-Conformer (rotary) as hosts: every plan kind on tiny random encoders fed raw waveforms with a
padding mask (post-norm base layers and the large models' stable-layer-norm variant); mha equals
the original; every kind trains; padding stays exact where the model's own feature encoder keeps it."""

from __future__ import annotations

import pytest
import torch

import attnreuse.hf as arhf
from attnreuse.hf.modules import PlanAttention
from attnreuse.plan import kind_names

from hfutil import tiny_model

# Every registered kind, after an mha layer (share and skip take what an earlier layer gives), then
# whole-model and mixed plans.
PLANS = [",".join(["mha"] + [k] * 3) for k in kind_names()] + [
    "reuse", "reuse:2", "taylor", "mha,share,mha,share", "mha,skip,skip,mha", "reuse,share,taylor,skip"]
VARIANTS = [("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("hubert", True),
            ("wav2vec2-conformer", False)]
LENGTHS = (400, 290, 170)  # samples: 39, 28 and 16 frames (10 samples a frame, a 20-sample receptive field)


def _model(family: str, stable: bool):
    if family == "wav2vec2-conformer":  # Conformer layers have one layout; its feature encoder is wav2vec2's
        return tiny_model(family)
    return tiny_model(family, do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group")


def _batch(lengths=LENGTHS, seed=0) -> dict:
    """Zero-padded waveforms [B, max L] and their sample mask, as a feature extractor pads them."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return {"input_values": torch.randn(mask.shape, generator=g) * mask, "attention_mask": mask}


def _frames(model, batch) -> torch.Tensor:
    lengths = model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
    return torch.arange(int(lengths.max()))[None] < lengths[:, None]


@pytest.mark.parametrize("family,stable", VARIANTS)
@pytest.mark.parametrize("plan", PLANS)
def test_speech_encoders_host_every_kind(family, stable, plan):
    model = _model(family, stable)
    converted = arhf.convert(model, plan)
    assert sum(isinstance(m, PlanAttention) for m in converted.modules()) == 4
    batch = _batch()
    with torch.no_grad():
        out = converted(**batch).last_hidden_state
        ref = model(**batch).last_hidden_state
    assert out.shape == ref.shape == (3, 39, 32) and torch.isfinite(out).all()
    if set(plan.split(",")) == {"mha"}:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    else:  # the attention maps are peaked enough that a compressed plan differs (the test can see a wrong mask)
        assert (out - ref).abs().max() > 1e-3


@pytest.mark.parametrize("family, overrides", [("data2vec-audio", {}), ("unispeech", {}), ("unispeech-sat", {}),
                                               ("sew", {"squeeze_factor": 2}),
                                               ("sew-d", {"squeeze_factor": 2, "position_buckets": 8})])
def test_wav2vec2_descendants_host_the_plans(family, overrides):
    """data2vec-audio, UniSpeech, UniSpeech-SAT and SEW (attention on frames pooled 2x) share
    wav2vec2's attention module, SEW-D DeBERTa's (relative terms): mha and reuse:H reproduce them
    with padding, a mixed plan runs."""
    model = tiny_model(family, **overrides)
    batch = _batch()
    # SEW-D divides its scores by a float32 sqrt tensor: in float64 the converted model differs from
    # it by 2e-7, and in float32 one output of magnitude 1.2 (of up to 5) by 1.1e-5
    exact = 2e-5 if family == "sew-d" else 1e-5
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        for plan, atol in (("mha", exact), ("reuse:4", 1e-4), ("reuse,share,taylor,skip", None)):
            converted = arhf.convert(model, plan)
            assert sum(isinstance(m, PlanAttention) for m in converted.modules()) == 4
            out = converted(**batch).last_hidden_state
            assert out.shape == ref.shape == (3, 39, 32) and torch.isfinite(out).all()
            if atol is None:
                assert (out - ref).abs().max() > 1e-3
            else:
                torch.testing.assert_close(out, ref, rtol=0, atol=atol, msg=lambda m: f"{family} {plan}: {m}")


@pytest.mark.parametrize("family,stable", VARIANTS)
def test_reuse_with_one_map_per_head_is_exact_on_speech(family, stable):
    model, batch = _model(family, stable), _batch()
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        out = arhf.convert(model, "reuse:4")(**batch).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("plan", PLANS)
def test_a_padded_clip_gives_what_it_gives_alone(plan):
    """With the layer-normed feature encoder (the large models'), a clip's real frames do not depend
    on the padding after it in the original model (the group-normed one normalises over padding);
    every kind keeps that."""
    model = arhf.convert(_model("wav2vec2", True), plan)
    batch = _batch()
    real = _frames(model, batch)
    with torch.no_grad():
        out = model(**batch).last_hidden_state
        for i, n in enumerate(LENGTHS):
            alone = model(input_values=batch["input_values"][i : i + 1, :n]).last_hidden_state[0]
            assert alone.shape[0] == int(real[i].sum())
            torch.testing.assert_close(out[i, : alone.shape[0]], alone, rtol=0, atol=2e-5)


@pytest.mark.parametrize("plan", PLANS[: len(kind_names())])
def test_every_kind_trains_on_speech(plan):
    """Gradients reach every plan layer's parameters through the masked batch, and one step lowers a loss."""
    torch.manual_seed(0)
    model = arhf.convert(_model("hubert", False), plan).train()
    batch = _batch()
    real = _frames(model, batch)
    target = torch.randn(3, 39, 32)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def loss_now():
        return torch.nn.functional.mse_loss(model(**batch).last_hidden_state[real], target[real])

    loss = loss_now()
    loss.backward()
    for layer in (m for m in model.modules() if isinstance(m, PlanAttention)):
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (layer, name)
    opt.step()
    with torch.no_grad():
        assert loss_now() < loss


def test_speech_plan_saves_and_loads(tmp_path):
    import transformers

    from hfutil import tiny_config

    torch.manual_seed(0)
    ctc = transformers.Wav2Vec2ForCTC(tiny_config("wav2vec2", vocab_size=12)).eval()
    model = arhf.convert(ctc, "mha,share,taylor,skip")
    arhf.save(model, tmp_path / "w")
    again = arhf.load(tmp_path / "w")
    assert type(again).__name__ == "Wav2Vec2ForCTC"
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_attn_implementation_attnreuse_on_a_plain_speech_encoder(tmp_path):
    """The registered implementation and its key-padding mask run a saved HuBERT as sdpa does."""
    import transformers

    arhf.register()
    _model("hubert", False).save_pretrained(tmp_path / "h")
    batch = _batch()
    outs = []
    for impl in ("sdpa", "attnreuse"):
        model = transformers.AutoModel.from_pretrained(tmp_path / "h", attn_implementation=impl, local_files_only=True)
        with torch.no_grad():
            outs.append(model.eval()(**batch).last_hidden_state)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)


def test_conformer_variants():
    """Wav2Vec2-Conformer rotates the hidden states before its query / key projections (rotary), or
    adds no positions in attention (None): both exact under mha and reuse:H, with padding; the
    Transformer-XL relative variant is refused in one line naming the setting."""
    batch = _batch()
    for positions in ("rotary", None):
        model = tiny_model("wav2vec2-conformer", position_embeddings_type=positions)
        with torch.no_grad():
            ref = model(**batch).last_hidden_state
            for plan, atol in (("mha", 1e-5), ("reuse:4", 1e-4)):
                out = arhf.convert(model, plan)(**batch).last_hidden_state
                real = _frames(model, batch)
                torch.testing.assert_close(out[real], ref[real], rtol=0, atol=atol, msg=f"{positions} {plan}")
    rotary, plain = tiny_model("wav2vec2-conformer"), tiny_model("wav2vec2-conformer", position_embeddings_type=None)
    plain.load_state_dict(rotary.state_dict(), strict=False)  # all but the rotary frequencies
    with torch.no_grad():  # so the exact match above needs the rotation: without it the outputs move
        assert (plain(**batch).last_hidden_state - rotary(**batch).last_hidden_state).abs().max() > 1e-3
    with pytest.raises(ValueError, match="position_embeddings_type='relative' is not supported: Transformer-XL"):
        arhf.convert(tiny_model("wav2vec2-conformer", position_embeddings_type="relative"), "mha")
