"""The `attnreuse hf` jobs on a tiny saved wav2vec2 (raw waveforms, the built-in synthetic clips):
analyse, convert with fitting, distil, evaluate (eager and ONNX Runtime), export; bad input."""

from __future__ import annotations

import json

import pytest
import torch

from cliutil import run as _run


from hfutil import tiny_model


@pytest.fixture
def speech_dir(tmp_path):
    """A saved tiny wav2vec2 without a preprocessor config (the jobs use the default feature extractor)."""
    directory = tmp_path / "tiny-wav2vec2"
    tiny_model("wav2vec2").save_pretrained(directory)
    return directory


def test_every_job_runs_on_a_speech_encoder(tmp_path, capsys, speech_dir):
    an = tmp_path / "an"
    code, out, _ = _run(capsys, "hf", "analyze", "--model", str(speech_dir), "--texts", "12", "--tokens", "32",
                        "--budget", "0.8", "--min-score", "0", "--output", str(an))
    assert code == 0 and "suggested plan" in out
    red = json.loads((an / "analysis.json").read_text())["redundancy"]
    assert red["texts"] == 12 and len(red["head_to_mean"]) == 4
    assert json.loads((an / "analysis.json").read_text())["text"] == "synthetic"
    conv = tmp_path / "conv"
    code, out, _ = _run(capsys, "hf", "convert", "--model", str(speech_dir), "--plan", "mha,share,reuse,share",
                        "--fit-steps", "2", "--output", str(conv))
    assert code == 0 and "zero-shot cosine" in out
    record = json.loads((conv / "convert.json").read_text())
    assert record["fidelity"]["texts"] == 32 and len(record["fit_loss"]) == 2  # every tenth of 320 clips held out
    assert (conv / "preprocessor_config.json").is_file()
    run = tmp_path / "run"
    code, out, _ = _run(capsys, "hf", "distill", "--teacher", str(speech_dir), "--init", str(conv), "--output", str(run),
                        "--steps", "3", "--batch-size", "8", "--warmup-steps", "1", "--checkpoint-every", "2",
                        "--no-progress")
    assert code == 0, out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["fidelity"]["cosine"] > 0.5
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    from safetensors.torch import load_file

    before, after = load_file(str(conv / "model.safetensors")), load_file(str(run / "model/model.safetensors"))
    stem = [k for k in before if k.startswith("feature_extractor.")]
    assert stem and all(torch.equal(before[k], after[k]) for k in stem)  # the conv feature encoder stays frozen
    assert not torch.equal(before["encoder.layers.1.attention.core.value.weight"],
                           after["encoder.layers.1.attention.core.value.weight"])
    code, out, _ = _run(capsys, "hf", "eval", "--teacher", str(speech_dir), str(run), "--tokens", "16",
                        "--rounds", "1", "--repeats", "2", "--threads", "1", "--runtimes", "eager,ort",
                        "--json", str(tmp_path / "e.json"))
    assert code == 0 and "of ideal" in out
    speed = json.loads((tmp_path / "e.json").read_text())["speed"]
    assert {(s["model"], s["runtime"]) for s in speed} == {(m, r) for m in ("original (sdpa)", str(run)) for r in ("eager", "ort")}
    assert all(s["mac_ideal"] > 1.0 for s in speed if s["model"] != "original (sdpa)")
    code, out, _ = _run(capsys, "hf", "export", str(run), "--output", str(tmp_path / "m.onnx"))
    assert code == 0 and (tmp_path / "m.onnx").is_file()
    import onnx

    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == ["input_values", "attention_mask"]


def test_padded_clips_pool_over_their_real_frames(speech_dir):
    """fidelity.embed pools each clip over the frames its real samples make: a clip padded in a
    batch embeds as it does alone (the layer-normed feature encoder keeps its frames exact)."""
    from attnreuse.hf.audio import WaveformBatcher, synthetic_clips
    from attnreuse.hf.fidelity import embed

    model = tiny_model("wav2vec2", do_stable_layer_norm=True, feat_extract_norm="layer")
    batcher = WaveformBatcher(model.config)
    clips = synthetic_clips(model.config, 5)
    assert len({len(c) for c in clips}) > 1
    together, _ = embed(model, batcher, clips, batch_size=5)
    alone = torch.cat([embed(model, batcher, [c], batch_size=1)[0] for c in clips])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_the_synthetic_clips_are_fixed_and_split():
    from attnreuse.hf.audio import frames_for_samples, split_clips, synthetic_clips

    from hfutil import tiny_config

    cfg = tiny_config("wav2vec2")
    a, b = synthetic_clips(cfg, 12), synthetic_clips(cfg, 12)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0][:100], a[1][:100])
    assert all(24 <= frames_for_samples(cfg, len(c)) <= 96 and c.abs().max() <= 1 for c in a)
    train, held = split_clips(a)
    assert len(held) == 2 and len(train) == 10 and held[1] is a[10]


@pytest.mark.parametrize("argv, message", [
    (["hf", "convert", "--plan", "mha", "--text", "TEXTS"], "--text .*wav2vec2 models read waveforms"),
])  # fmt: skip
def test_speech_bad_input_is_one_line(tmp_path, capsys, speech_dir, argv, message):
    texts = tmp_path / "t.txt"
    texts.write_text("a text\n")
    argv = [str(texts) if a == "TEXTS" else a for a in argv]
    code, _, err = _run(capsys, *argv, "--model", str(speech_dir), "--output", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()



def test_every_job_runs_on_a_whisper_encoder(tmp_path, capsys, whisper_dir):
    """Whisper's encoder reads log-mel frames padded to its one length (2 x max_source_positions = 24
    here): every job runs on the synthetic clips, pooling over each clip's real frames."""
    an = tmp_path / "an"
    code, out, err = _run(capsys, "hf", "analyze", "--model", str(whisper_dir), "--texts", "12", "--budget", "0.8",
                          "--min-score", "0", "--output", str(an))
    assert code == 0 and "suggested plan" in out, err
    record = json.loads((an / "analysis.json").read_text())
    assert record["text"] == "synthetic" and len(record["redundancy"]["head_to_mean"]) == 4
    assert record["suggestion"]["tokens"] == 12  # the encoder's one length, not the text default of 512
    conv = tmp_path / "conv"
    code, out, err = _run(capsys, "hf", "convert", "--model", str(whisper_dir), "--plan", "mha,share,reuse,share",
                          "--fit-steps", "2", "--output", str(conv))
    assert code == 0 and "zero-shot cosine" in out, err
    assert json.loads((conv / "config.json").read_text())["architectures"] == ["WhisperEncoder"]
    assert (conv / "preprocessor_config.json").is_file()
    run = tmp_path / "run"
    code, out, err = _run(capsys, "hf", "distill", "--teacher", str(whisper_dir), "--init", str(conv), "--output",
                          str(run), "--steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--no-progress")
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["fidelity"]["cosine"] > 0.5
    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(whisper_dir), str(run), "--rounds", "1", "--repeats",
                          "2", "--threads", "1", "--runtimes", "eager,ort", "--json", str(tmp_path / "e.json"))
    assert code == 0 and "of ideal" in out, err
    speed = json.loads((tmp_path / "e.json").read_text())["speed"]
    assert {s["tokens"] for s in speed} == {12} and {s["runtime"] for s in speed} == {"eager", "ort"}
    code, _, err = _run(capsys, "hf", "eval", "--teacher", str(whisper_dir), str(run), "--tokens", "16")
    assert code == 2 and "max_source_positions = 12" in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(capsys, "hf", "export", str(run), "--output", str(tmp_path / "w.onnx"))
    assert code == 0, err
    import onnx

    graph = onnx.load(str(tmp_path / "w.onnx")).graph
    assert [i.name for i in graph.input] == ["input_features"]  # Whisper's encoder reads no mask
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 8, 24]  # batch dynamic; mel bins and Whisper's fixed length are not


def test_mel_batches_pad_to_the_encoder_length_and_mask_real_frames(whisper_dir):
    """Each clip becomes 2P mel frames; encoder frame i is real when mel frame 2i is, and the
    real frames the mask keeps are the ones `frames()` counts."""
    from attnreuse.hf.audio import MelBatcher, frame_mask, synthetic_clips
    from attnreuse.hf.source import load_preprocessor, load_source

    model, config = load_source(whisper_dir)
    assert type(model).__name__ == "WhisperEncoder"
    batcher = load_preprocessor(whisper_dir, config)
    assert isinstance(batcher, MelBatcher)
    clips = synthetic_clips(config, 4, min_frames=3, max_frames=30)
    batch = batcher(clips)
    assert batch["input_features"].shape == (4, 8, 24) and batch["attention_mask"].shape == (4, 24)
    mask = frame_mask(model, batch["attention_mask"], 12)
    assert mask.sum(-1).tolist() == batcher.frames(clips)
    short = batcher(clips, truncation=True, max_length=2)
    assert frame_mask(model, short["attention_mask"], 12).sum(-1).tolist() == [2, 2, 2, 2]


def test_a_checkpoint_without_the_encoder_weights_is_refused(tmp_path, capsys):
    """A directory whose weights lack the encoder's would load as random weights: one line instead."""
    import transformers
    from safetensors.torch import load_file, save_file

    from hfutil import tiny_config

    directory = tmp_path / "w"
    transformers.WhisperModel(tiny_config("whisper")).save_pretrained(directory)
    state = load_file(str(directory / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("encoder.layers.0.")}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    code, _, err = _run(capsys, "hf", "convert", "--model", str(directory), "--plan", "mha", "--output", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lack" in err and "encoder.layers.0." in err, err
    assert not (tmp_path / "o").exists()


def test_a_vision_model_without_an_image_processor_takes_the_default_one(tmp_path, capsys):
    """The jobs batched only text and speech ("convert this one in Python"); a ViT directory saved
    without preprocessor_config.json is batched by a ViTImageProcessor at its image_size."""
    tiny_model("vit").save_pretrained(tmp_path / "v")
    code, out, err = _run(capsys, "hf", "convert", "--model", str(tmp_path / "v"), "--plan", "mha", "--output",
                          str(tmp_path / "o"))
    assert code == 0 and "zero-shot cosine 1.0000" in out, err


def test_analysis_batches_shrink_to_the_map_budget_without_changing_the_result(whisper_dir, monkeypatch):
    """A Whisper encoder's maps are N = max_source_positions square for every clip: capture takes
    fewer clips a batch where their maps would pass the budget, and the redundancy it measures is
    the same."""
    from attnreuse.hf import analyze
    from attnreuse.hf.audio import synthetic_clips
    from attnreuse.hf.source import load_preprocessor, load_source

    model, config = load_source(whisper_dir)
    batcher = load_preprocessor(whisper_dir, config)
    clips = synthetic_clips(config, 5, min_frames=4, max_frames=12)
    whole = analyze.capture(model, batcher, clips)
    calls = []
    model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs["input_features"].shape[0]),
                                    with_kwargs=True)
    per_clip = 3 * 4 * 4 * 12 * 12 * 4  # layers x heads x N^2 floats, three times over
    monkeypatch.setattr(analyze, "MAP_BUDGET_BYTES", 2 * per_clip)
    pairs = analyze.capture(model, batcher, clips)
    assert calls == [2, 2, 1]
    for a, b in ((whole.head_to_mean, pairs.head_to_mean), (whole.layer_map_cosine, pairs.layer_map_cosine)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family, overrides, kinds, plan", [
    # Wav2Vec2-Conformer (rotary): every kind that forms scores from the rotated input
    ("wav2vec2-conformer", {}, "share,reuse,taylor,kvpool", "mha,reuse,taylor,kvpool"),
    # SEW: wav2vec2's front end, attention on frames pooled 2x and upsampled back
    ("sew", {"squeeze_factor": 2}, "share,reuse,skip", "mha,share,reuse,skip"),
    # SEW-D: SEW with DeBERTa's attention (relative terms)
    ("sew-d", {"squeeze_factor": 2}, "share,reuse,skip", "mha,share,reuse,skip"),
])
def test_every_job_runs_on_a_wav2vec2_descendant(tmp_path, capsys, family, overrides, kinds, plan):
    """analyze, convert, distil, evaluate in PyTorch and ONNX Runtime, export."""
    directory = tmp_path / f"tiny-{family}"
    tiny_model(family, **overrides).save_pretrained(directory)
    code, out, err = _run(capsys, "hf", "analyze", "--model", str(directory), "--texts", "12", "--tokens", "32",
                          "--kinds", kinds, "--output", str(tmp_path / "an"))
    assert code == 0 and "suggested plan" in out, err
    conv = tmp_path / "conv"
    code, out, err = _run(capsys, "hf", "convert", "--model", str(directory), "--plan", plan, "--output", str(conv))
    assert code == 0 and "zero-shot cosine" in out, err
    run = tmp_path / "run"
    code, out, err = _run(capsys, "hf", "distill", "--teacher", str(directory), "--init", str(conv), "--output", str(run),
                          "--steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--no-progress")
    assert code == 0, err
    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(directory), str(run), "--tokens", "16", "--rounds", "1",
                          "--repeats", "2", "--threads", "1", "--runtimes", "eager,ort")
    assert code == 0 and "of ideal" in out, err
    code, out, err = _run(capsys, "hf", "export", str(run), "--output", str(tmp_path / "c.onnx"))
    assert code == 0 and "ONNX Runtime vs PyTorch" in out, err
