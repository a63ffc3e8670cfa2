"""Whisper's encoder as a host: every plan kind on a tiny random encoder; mha equals the original."""

from __future__ import annotations

import pytest
import torch

import attnreuse.hf as arhf

from hfutil import tiny_config, tiny_model

PLANS = ["mha", "reuse", "reuse:2", "taylor", "mha,share,mha,share", "mha,share,share,mha", "mha,skip,skip,mha",
         "reuse,share,taylor,skip"]


def _features(batch=2, seed=0):
    cfg = tiny_config("whisper")
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)


@pytest.mark.parametrize("plan", PLANS)
def test_whisper_encoder_hosts_every_kind(plan):
    model = tiny_model("whisper")
    converted = arhf.convert(model, plan)
    x = _features()
    with torch.no_grad():
        out = converted(input_features=x).last_hidden_state
        ref = model(input_features=x).last_hidden_state
    assert out.shape == ref.shape == (2, 12, 32) and torch.isfinite(out).all()
    kinds = [m.spec.kind for m in converted.modules() if isinstance(m, arhf.modules.PlanAttention)]
    assert len(kinds) == 4
    if plan == "mha":
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_reuse_with_one_map_per_head_is_exact_on_whisper():
    """k_proj has no bias: the rank-d factors still rebuild each head's score (bias column 0)."""
    model = tiny_model("whisper")
    x = _features()
    with torch.no_grad():
        ref = model(input_features=x).last_hidden_state
        out = arhf.convert(model, "reuse:4")(input_features=x).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


def test_only_the_bare_encoder_converts():
    import transformers

    torch.manual_seed(0)
    full = transformers.WhisperModel(tiny_config("whisper")).eval()
    with pytest.raises(ValueError, match="convert a WhisperEncoder, got WhisperModel"):
        arhf.convert(full, "mha")
    converted = arhf.convert(full.get_encoder(), "mha,share,mha,share")
    with torch.no_grad():
        assert converted(input_features=_features()).last_hidden_state.shape == (2, 12, 32)


def test_whisper_plan_saves_and_loads(tmp_path):
    model = arhf.convert(tiny_model("whisper"), "mha,share,taylor,skip")
    arhf.save(model, tmp_path / "w")
    again = arhf.load(tmp_path / "w")
    x = _features()
    with torch.no_grad():
        torch.testing.assert_close(again(input_features=x).last_hidden_state,
                                   model(input_features=x).last_hidden_state, rtol=0, atol=0)
