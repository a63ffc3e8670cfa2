"""Tiny random-weight transformers encoders (one of every hosted family: `family_model`) and a word-level
tokenizer the hf tests build (no download)."""

from __future__ import annotations

import pytest

from attnreuse.hf.hosts import HOSTS

transformers = pytest.importorskip("transformers")

WORDS = ("return the value of a list with items and keys from this file or path when given by name "
         "open close read write number string object class method function module error test data").split()


def tiny_config(kind: str = "bert", **overrides):
    common = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "bert":
        return transformers.BertConfig(vocab_size=len(WORDS) + 5, max_position_embeddings=64, **{**common, **overrides})
    if kind == "roberta":
        return transformers.RobertaConfig(vocab_size=len(WORDS) + 5, max_position_embeddings=70, pad_token_id=1,
                                          **{**common, **overrides})
    if kind == "vit":
        return transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, **{**common, **overrides})
    if kind == "whisper":  # the encoder's input is 2 x max_source_positions mel frames
        return transformers.WhisperConfig(**{**WHISPER, **overrides})
    if kind in SPEECH:  # raw waveform in; two convs (kernel 10 stride 5, kernel 3 stride 2): 10 samples a frame
        return SPEECH[kind][0](**{**WAV2VEC2, **(CONFORMER if kind == "wav2vec2-conformer" else {}), **overrides})
    raise ValueError(kind)


WHISPER = dict(d_model=32, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=64, decoder_layers=1,
               decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=12,
               vocab_size=64, pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3,
               dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


# wav2vec2 / HuBERT: a two-layer conv feature encoder, a grouped positional convolution of even
# width (so its same-padding trims a frame), no dropout or SpecAugment; initializer_range 0.3 gives
# peaked attention maps, so a wrong mask or scale shows in the outputs. `do_stable_layer_norm=True`
# with `feat_extract_norm="layer"` is the large models' pre-norm variant.
WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
                num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0,
                activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0,
                initializer_range=0.3)
SPEECH = {"wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
          "hubert": (transformers.HubertConfig, transformers.HubertModel),
          "wav2vec2-conformer": (transformers.Wav2Vec2ConformerConfig, transformers.Wav2Vec2ConformerModel),
          "data2vec-audio": (transformers.Data2VecAudioConfig, transformers.Data2VecAudioModel),
          "unispeech": (transformers.UniSpeechConfig, transformers.UniSpeechModel),
          "unispeech-sat": (transformers.UniSpeechSatConfig, transformers.UniSpeechSatModel),
          "sew": (transformers.SEWConfig, transformers.SEWModel),
          "sew-d": (transformers.SEWDConfig, transformers.SEWDModel)}
# Wav2Vec2-Conformer: its rotary variant (the relative one is refused) with a short depthwise convolution
CONFORMER = dict(position_embeddings_type="rotary", conv_depthwise_kernel_size=3)


def whisper_encoder_class():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder


def tiny_model(kind: str = "bert", seed: int = 0, **overrides):
    import torch

    torch.manual_seed(seed)
    classes = {"bert": transformers.BertModel, "roberta": transformers.RobertaModel, "vit": transformers.ViTModel}
    classes.update({k: v[1] for k, v in SPEECH.items()})
    cls = whisper_encoder_class() if kind == "whisper" else classes[kind]
    model = cls(tiny_config(kind, **overrides))
    return model.eval()


def tiny_tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # transformers 5 reads the word list from `vocab` (a path); `vocab_file` alone is ignored and leaves a
    # 5-token vocabulary in which every word is [UNK]
    return transformers.BertTokenizerFast(vocab=str(vocab), do_lower_case=True)


def sentences(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]


TEXT = [t for h in HOSTS if h.inputs == "input_ids" for t in h.model_types]
VISION = [t for h in HOSTS if h.inputs == "pixel_values" for t in h.model_types]
SIZES = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)


def family_model(model_type: str, **overrides):
    """A tiny random model of any hosted `model_type` (AutoModel) (the text ones: peaked maps, so a wrong
    mask or scale shows); `overrides` go into its config last."""
    kw = dict(SIZES)
    if model_type in TEXT:
        kw.update(vocab_size=len(WORDS) + 5, max_position_embeddings=70, pad_token_id=1, initializer_range=0.3)
        if model_type == "distilbert":
            kw.update(hidden_dim=64, dropout=0.0, attention_dropout=0.0)
        elif model_type == "modernbert":  # local layers see 8 tokens: the test sentences are longer
            kw.update(local_attention=8, global_attn_every_n_layers=2, embedding_dropout=0.0, mlp_dropout=0.0,
                      attention_dropout=0.0, bos_token_id=2, cls_token_id=2, eos_token_id=3, sep_token_id=3)
        else:
            kw.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        if model_type == "deberta-v2":  # as the v3 checkpoints: relative positions only, shared position
            # projections, log buckets (8 here: the test sentences are longer, so far tokens share one)
            kw.update(relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True, position_buckets=8,
                      max_relative_positions=-1, position_biased_input=False, norm_rel_ebd="layer_norm", type_vocab_size=0)
    else:
        kw.update(image_size=16, patch_size=4, num_channels=3)
    import torch

    torch.manual_seed(0)
    return transformers.AutoModel.from_config(transformers.AutoConfig.for_model(model_type, **{**kw, **overrides})).eval()


def family_text_batch(tmp_path, n: int = 4, seed: int = 0):
    """Padded tokenised sentences, without token_type_ids (not every family takes them)."""
    batch = tiny_tokenizer(tmp_path)(sentences(n, seed=seed), padding=True, return_tensors="pt")
    batch.pop("token_type_ids")
    return batch
