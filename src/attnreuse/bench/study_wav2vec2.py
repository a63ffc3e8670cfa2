"""wav2vec2, HuBERT and Wav2Vec2-Conformer in `attnreuse bench study`: presets, the waveform of N
frames, the marks.

A Wav2Vec2-Conformer (its config.json; no preset: the released Conformers are large) runs with the
same feature encoder; its layers' two half-step feed-forwards are the breakdown's FFN, and its
convolution module, which no other family has, a rest piece of its own ("conv_module").

Presets are the released base configurations (12 layers, 768 wide, 12 heads, 3072 FFN; the
7-layer conv feature encoder of 512 channels, strides 5,2,2,2,2,2,2 and kernels 10,3,3,3,3,2,2: one
frame per 320 samples, 20 ms at 16 kHz, so ~50 frames a second), which are `transformers`' config
defaults for both families; weights are random.

Length: the study's N is encoder frames. Each N gets the raw waveform of the fewest samples the
feature encoder turns into exactly N frames (`attnreuse.hf.audio.samples_for_frames`: 320 (N - 1)
+ 400 for the base conv stack), and the forward runs from the waveform, as a user's call does,
rather than feeding the encoder frames: the latency is the model's end to end, and the feature
encoder's share is measured, not left out. It sits in the breakdown's rest as "stem" (the conv
feature encoder on the waveform, the feature projection and the positional convolution, kernel 128
in 16 groups), so the encoder's own time is the total less `ms_rest_stem`. Unlike Whisper, positions are convolutional: there is no
table and no length limit, so `--positions` does not apply. No padding mask (one length per batch).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PRESETS", "STEM", "build", "handles", "inputs_at", "speech_config", "watch"]

# The released base models' sizes (facebook/wav2vec2-base, facebook/hubert-base-ls960), as config
# fields; every other field keeps transformers' default, which is the base model's.
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
PRESETS = {"wav2vec2-base": ("wav2vec2", _BASE), "hubert-base": ("hubert", _BASE)}
# The speech hosts with wav2vec2's feature encoder and encoder layout (`attnreuse.hf.hosts`); a
# config.json of any runs. NOT_STUDIED: hosts the study refuses, and why.
MODEL_TYPES = ("wav2vec2", "hubert", "wav2vec2-conformer", "data2vec-audio", "unispeech", "unispeech-sat")
_POOLED = "its encoder attends on pooled frames, so N would not be its attention's length"
NOT_STUDIED = {"sew": _POOLED, "sew-d": _POOLED}
STEM = "conv feature encoder on the waveform + feature projection + positional convolution"


def _config_class(model_type: str):
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]


def speech_config(model: str, positions: int = 0):
    """The config of `model` (a preset here, or a wav2vec2 / HuBERT config.json), dropout and
    SpecAugment off; None when `model` is neither (a Whisper preset or config)."""
    if model in PRESETS:
        model_type, sizes = PRESETS[model]
        cfg = _config_class(model_type)(**sizes)
    else:
        path = Path(model)
        path = path / "config.json" if path.is_dir() else path
        try:
            model_type = json.loads(path.read_text()).get("model_type") if path.is_file() else None
        except (ValueError, OSError, AttributeError):
            return None  # the Whisper path names the problem
        if model_type not in MODEL_TYPES:
            return None
        try:
            cfg = _config_class(model_type).from_json_file(str(path))
        except (ValueError, OSError, TypeError) as err:
            raise ValueError(f"--model {model}: not a readable {model_type} config ({str(err).splitlines()[0]})") from None
    if positions:
        raise ValueError(f"--positions applies to Whisper's position table; {model} has convolutional positions "
                         "(no table, no length limit): leave it at 0")
    for name in ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "layerdrop",
                 "mask_time_prob", "mask_feature_prob"):
        setattr(cfg, name, 0.0)
    cfg._attn_implementation = "sdpa"
    return cfg


def build(cfg):
    """The bare encoder model of `cfg` (Wav2Vec2Model, HubertModel, ...: transformers' AutoModel
    class of its type), random weights, eval mode."""
    from transformers import AutoModel

    return AutoModel.from_config(cfg).eval()


def handles(model_or_config) -> bool:
    """Whether a model (or its config) is of this family."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) in MODEL_TYPES


def inputs_at(model, frames: int, batch: int, seed: int) -> dict:
    """{"input_values": [batch, samples]}: a random waveform the model turns into `frames` frames."""
    import torch

    from attnreuse.hf.audio import samples_for_frames

    samples = samples_for_frames(model.config, frames)
    got = int(model._get_feat_extract_output_lengths(samples))
    if got != frames:
        raise RuntimeError(f"{samples} samples gave {got} frames, not {frames}: the conv stack arithmetic is wrong")
    g = torch.Generator().manual_seed(seed)
    return {"input_values": torch.randn(batch, samples, generator=g)}


def watch(timer, model) -> None:
    """Marks as the Whisper study sets them: the stem (see STEM), the encoder's layer norm, and per
    layer its norms, attention module, projections (stock or converted) and feed-forward block."""
    from attnreuse.bench.study import CONFORMER_PART, watch_attention

    for module in (model.feature_extractor, model.feature_projection, model.encoder.pos_conv_embed,
                   getattr(model.encoder, "embed_positions", None)):  # a Conformer's rotary table
        if module is not None:
            timer.watch(module, "stem")
    timer.watch(model.encoder.layer_norm, "norm")
    for i, layer in enumerate(model.encoder.layers):
        timer.watch(layer, "layer", i)
        if hasattr(layer, "conv_module"):  # a Conformer block: FFN/2, attention, convolution, FFN/2
            for norm in (layer.ffn1_layer_norm, layer.self_attn_layer_norm, layer.ffn2_layer_norm, layer.final_layer_norm):
                timer.watch(norm, "norm", i)
            watch_attention(timer, layer.self_attn, i)
            timer.watch(layer.ffn1, "ffn", i)
            timer.watch(layer.ffn2, "ffn", i)
            timer.watch(layer.conv_module, CONFORMER_PART, i)
            continue
        for norm in (layer.layer_norm, layer.final_layer_norm):
            timer.watch(norm, "norm", i)
        watch_attention(timer, layer.attention, i)
        timer.watch(layer.feed_forward, "ffn", i)
