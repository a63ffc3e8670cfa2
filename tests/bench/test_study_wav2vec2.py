"""`attnreuse bench study` on wav2vec2 / HuBERT: the presets' sizes, the waveform of N frames, the
marks (the feature encoder in the stem), bad input; a tiny random HuBERT end to end. Structure
only: no assertion compares speeds."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("transformers")

from attnreuse.bench import study  # noqa: E402
from attnreuse.bench import study_wav2vec2 as w2v  # noqa: E402
from attnreuse.cli import main  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16),
            conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4)


@pytest.mark.parametrize("preset", ["wav2vec2-base", "hubert-base"])
def test_presets_are_the_base_models(preset):
    cfg = w2v.speech_config(preset)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (768, 12, 12, 3072)
    assert cfg.model_type == preset.split("-")[0] and not cfg.do_stable_layer_norm and cfg.feat_extract_norm == "group"
    assert tuple(cfg.conv_stride) == (5, 2, 2, 2, 2, 2, 2) and tuple(cfg.conv_kernel) == (10, 3, 3, 3, 3, 2, 2)
    assert cfg.layerdrop == 0.0 and cfg.mask_time_prob == 0.0 and cfg.hidden_dropout == 0.0


def test_the_waveform_of_n_frames_is_the_shortest_that_gives_n():
    """320 samples a frame and a 400-sample receptive field on the base conv stack, checked against
    the model's own output-length rule; one sample fewer gives a frame fewer."""
    import transformers

    from attnreuse.hf.audio import samples_for_frames

    cfg = transformers.Wav2Vec2Config(**{**TINY, "conv_dim": (4,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2),
                                         "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "num_feat_extract_layers": 7})
    model = transformers.Wav2Vec2Model(cfg)
    for n in (1, 8, 250, 1500):
        samples = samples_for_frames(cfg, n)
        assert samples == 320 * (n - 1) + 400
        assert int(model._get_feat_extract_output_lengths(samples)) == n
        assert int(model._get_feat_extract_output_lengths(samples - 1)) == n - 1
    x = w2v.inputs_at(model, 8, batch=2, seed=0)["input_values"]
    assert x.shape == (2, 2640)
    with __import__("torch").no_grad():
        assert model.eval()(x).last_hidden_state.shape == (2, 8, 32)


@pytest.fixture
def tiny_hubert(tmp_path):
    from transformers import HubertConfig

    path = tmp_path / "hubert-tiny-random.json"
    HubertConfig(**TINY).to_json_file(str(path))
    return path


@pytest.mark.parametrize("argv, match", [
    (["--model", "wav2vec2-base", "--lengths", "64", "--positions", "100"], "--positions applies to Whisper"),
    (["--model", "hubert-large", "--lengths", "64"], "--model must be one of .*wav2vec2-base, hubert-base"),
])  # fmt: skip
def test_bad_speech_input_is_one_line_and_non_zero(argv, match, tmp_path, capsys):
    assert main(["bench", "study", *argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("attnreuse bench study: error:")
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "o").exists()


def _tiny_study(model, plans: tuple[str, ...], out) -> tuple[study.StudyConfig, list[dict]]:
    """One timed round at 12 frames of the plans (and sdpa, mha); every record's parts add up to its breakdown."""
    config = study.StudyConfig(model=str(model), lengths=(12,), plans=plans, threads=1, rounds=1, repeats=1, warmup=1,
                               breakdown_repeats=1, check_length=12, output=str(out))
    records = study.run_study(config)
    assert [r["plan"] for r in records] == ["sdpa", "mha", *plans]
    for r in records:
        assert sum(r[f"ms_{p}"] for p in study.PARTS) == pytest.approx(r["breakdown_total_ms"])
    return config, records


def test_tiny_hubert_study_measures_the_feature_encoder_as_stem(tiny_hubert, tmp_path):
    out = tmp_path / "study"
    _, records = _tiny_study(tiny_hubert, ("share2", "taylor"), out)
    for r in records:
        assert r["ms_rest_stem"] > 0 and r["ms_rest_norms"] > 0 and r["ms_ffn"] > 0 and r["ms_qk_proj"] > 0
        assert r["stem"] == w2v.STEM and r["input_shape"] == [1, 130]  # (12 - 1) * 10 + 20 samples
        assert r["positions"] is None and not r["positions_extended"] and len(r["layers"]) == 4
    by = {r["plan"]: r for r in records}
    assert by["sdpa"]["ms_core"] > 0 and by["sdpa"]["ms_scores_softmax"] == 0
    assert by["mha"]["ms_scores_softmax"] > 0 and by["mha"]["ms_av"] > 0
    assert [layer["qk_proj"] > 0 for layer in by["share2"]["layers"]] == [True, False, True, False]
    assert by["share2"]["predicted_speedup_vs_mha"] > 1.0
    assert len(json.loads((out / "records.json").read_text())) == 4
    report = (out / "report.md").read_text()
    assert "| share2 |" in report and f"stem: {w2v.STEM}." in report


def test_tiny_conformer_study_measures_its_convolution_module(tmp_path):
    """A Wav2Vec2-Conformer config.json (rotary): its two half-step feed-forwards are the FFN, its
    convolution module a rest piece of its own, and the parts still add up to the breakdown."""
    import transformers

    path = tmp_path / "conformer.json"
    transformers.Wav2Vec2ConformerConfig(**TINY, position_embeddings_type="rotary", conv_depthwise_kernel_size=3).to_json_file(path)
    out = tmp_path / "study"
    config, records = _tiny_study(path, ("share2", "reuse"), out)
    for r in records:
        assert r["ms_rest"] == pytest.approx(sum(r[f"ms_rest_{p}"] for p in (*study.REST_PARTS, "conv_module")))
        assert r["ms_rest_conv_module"] > 0 and r["ms_ffn"] > 0 and r["ms_qk_proj"] > 0 and r["ms_rest_stem"] > 0
    assert "| conv_module |" in (out / "report.md").read_text()
    path.write_text(path.read_text().replace('"rotary"', '"relative"'))
    with pytest.raises(ValueError, match="position_embeddings_type='relative' is not supported"):
        study.run_study(dataclasses.replace(config, output=str(tmp_path / "relative")))


@pytest.mark.parametrize("model_type", ["data2vec-audio", "unispeech-sat"])
def test_a_wav2vec2_descendant_config_runs_the_study(model_type, tmp_path):
    """data2vec-audio and UniSpeech(-SAT) config.json files run as wav2vec2's do (same feature
    encoder, same layers): the parts add up, the stem is measured, the share layers skip Q/K."""
    import transformers

    path = tmp_path / f"{model_type}.json"
    transformers.AutoConfig.for_model(model_type, **TINY).to_json_file(path)
    _, records = _tiny_study(path, ("share2",), tmp_path / "study")
    for r in records:
        assert r["ms_rest_stem"] > 0 and r["ms_ffn"] > 0 and r["stem"] == w2v.STEM
    share2 = next(r for r in records if r["plan"] == "share2")
    assert [layer["qk_proj"] > 0 for layer in share2["layers"]] == [True, False, True, False]


@pytest.mark.parametrize("model_type", ["sew", "sew-d"])
def test_a_sew_config_is_refused_by_the_study(tmp_path, capsys, model_type):
    """SEW and SEW-D attend on pooled frames, so the study's N would not be their attention's: one
    line, non-zero."""
    import transformers

    path = tmp_path / f"{model_type}.json"
    transformers.AutoConfig.for_model(model_type, **TINY).to_json_file(path)
    assert main(["bench", "study", "--model", str(path), "--lengths", "12", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"model_type '{model_type}' is not one the study runs (its encoder attends on pooled" in err, err
