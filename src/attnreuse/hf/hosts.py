"""Which `transformers` architectures host a plan, and where their attention sits.

A host names, for one family: the attention module class it replaces, that module's query / key /
value projections, and its output projection when the module owns one (ViT's `o_proj`; BERT's
sits outside, in `BertSelfOutput`), and, where one config type also builds decoders, the one
model class it converts (Whisper: the bare `WhisperEncoder`). Supported `model_type`s: `SUPPORTED`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from attnreuse.plan import SourceAttention

__all__ = ["HOSTS", "SUPPORTED", "SPEECH_INPUTS", "TOWERS", "VISION_INPUTS", "Host", "fixed_length", "host_for",
           "input_stem", "length_limit", "max_tokens"]


@dataclass(frozen=True)
class Host:
    family: str
    model_types: tuple[str, ...]
    attention_suffix: str  # class-name suffix of the replaced module
    qkv: tuple[str, str, str] | tuple[str]  # the query, key, value projections, or one fused projection
    out_proj: str | None = None
    # Where a config type also builds encoder-decoder models (Whisper), the one class converted: its
    # self-attention modules are all encoder layers. A WhisperModel's decoder also holds
    # `WhisperAttention` modules (self and cross) that the plans do not apply to.
    model_class: str | None = None
    model_hint: str = ""
    # The model's main input: "input_ids" (text, tokenizer), "input_values" (raw waveform),
    # "input_features" (log-mel frames of a waveform, Whisper), "pixel_values" (images).
    inputs: str = "input_ids"
    # An additive per-head score bias [B, H, N, N] the model hands every layer's attention, as
    # (index among the arguments after the mask, keyword name): MPNet's relative-position bias.
    score_bias: tuple[int, str] | None = None
    # How the original runs (the baseline of every comparison): PyTorch's fused SDPA where the
    # family has it, else transformers' eager attention (MPNet's only one).
    attn_implementation: str = "sdpa"
    # The keyword of the rotary position embeddings the model hands every layer's attention, else
    # None: "heads" rotates each head's query and key after the projections (ModernBERT's
    # `position_embeddings`, a (cos, sin) pair [B, N, d]); "input" rotates the projections' input,
    # head-size chunk by chunk, before them (Wav2Vec2-Conformer's `relative_position_embeddings`,
    # cos and sin stacked [2, N, 1, 1, d]). Both in the rotate-half layout.
    rotary: str | None = None
    rotary_on: str = "heads"
    rotary_when: tuple[str, object] | None = None  # (config attribute, value) when only some configs rotate
    # (config attribute, value, why): configurations of a hosted family that are refused
    unsupported: tuple[tuple[str, object, str], ...] = ()
    # DeBERTa's disentangled relative attention: each layer gets `rel_embeddings` and `relative_pos`
    # and adds c2p / p2c terms from its own queries and keys (`attnreuse.hf.disentangled`)
    relative: bool = False
    # the attention_mask the model hands a layer is a per-head score bias, not padding (BEiT's
    # relative-position bias, added to the mask by its layer; images are never padded)
    mask_is_score_bias: bool = False

    def check_model(self, model: nn.Module) -> None:
        """Raise if `model` is not the class this host converts (when it names one)."""
        if self.model_class is not None and type(model).__name__ != self.model_class:
            raise ValueError(f"{self.family}: convert a {self.model_class}, got {type(model).__name__}{self.model_hint}")

    def attention_modules(self, model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
        """(parent, attribute, module) of every replaced attention module, in layer order."""
        found = []
        for name, module in model.named_modules():
            if type(module).__name__.endswith(self.attention_suffix) and "Cross" not in type(module).__name__:
                parent_name, _, attr = name.rpartition(".")
                found.append((model.get_submodule(parent_name), attr, module))
        return found

    def rotary_kwarg(self, config) -> str | None:
        """The keyword of the rotary embeddings a model of `config` hands its layers, or None."""
        if self.rotary is None or (self.rotary_when and getattr(config, self.rotary_when[0], None) != self.rotary_when[1]):
            return None
        return self.rotary

    def weight(self, module: nn.Module):
        """The replaced module's query projection weight (or its fused qkv's): its device and dtype."""
        return module.get_parameter(f"{self.qkv[0]}.weight")

    def source(self, module: nn.Module, num_heads: int) -> SourceAttention:
        linears = [getattr(module, n) for n in self.qkv]
        dim = linears[0].in_features
        if len(linears) == 1:  # one fused projection (ModernBERT's Wqkv): query, key, value rows in turn
            fused = linears[0]
            if fused.out_features != 3 * dim:
                raise ValueError(f"{self.family}: fused qkv width {fused.out_features} is not 3 x the hidden size {dim}")
            weights = dict(zip(("query", "key", "value"), fused.weight.detach().chunk(3)))
            split = [None] * 3 if fused.bias is None else fused.bias.detach().chunk(3)
            biases = dict(zip(("query", "key", "value"), split))
        else:
            if linears[0].out_features != dim:
                raise ValueError(f"{self.family}: attention width {linears[0].out_features} differs from the hidden size {dim}")
            weights = {k: _per_query_head(lin.weight.detach(), num_heads, dim, self.family)
                       for k, lin in zip(("query", "key", "value"), linears)}
            biases = {k: None if lin.bias is None else _per_query_head(lin.bias.detach(), num_heads, dim, self.family)
                      for k, lin in zip(("query", "key", "value"), linears)}
        if self.relative:
            from attnreuse.hf.disentangled import disentangled_scale

            scale = disentangled_scale(module)
        else:
            scale = float(getattr(module, "scaling", (dim // num_heads) ** -0.5))
        return SourceAttention(dim=dim, num_heads=num_heads, weights=weights, biases=biases, scale=scale,
                               rotary=self.rotary is not None and self.rotary_on == "heads")


def _per_query_head(param, num_heads: int, dim: int, family: str):
    """A projection's weight [W, C] or bias [W] with one row block per query head: as it is when W is
    the hidden size `dim`; a grouped-query key or value projection (W = kv heads x head size, the
    query heads split evenly among them) gets each kv head's rows repeated for the query heads that
    read it, as transformers' `repeat_kv` pairs them (query head h reads kv head h // (H / kv))."""
    width, head_dim = param.shape[0], dim // num_heads
    if width == dim:
        return param
    kv_heads = width // head_dim
    if width % head_dim or not kv_heads or num_heads % kv_heads:
        raise ValueError(f"{family}: a key/value projection of width {width} is not a whole number of kv heads of "
                         f"{head_dim} that divides the {num_heads} query heads")
    blocks = param.reshape(kv_heads, head_dim, *param.shape[1:])
    return blocks.repeat_interleave(num_heads // kv_heads, dim=0).reshape(dim, *param.shape[1:])


_SEPARATE_POSITION_PROJECTIONS = (("share_att_key", False, "separate position projections (pos_key_proj / "
                                   "pos_query_proj); shared ones (share_att_key=True, as in DeBERTa v3) are"),)

HOSTS = (
    # BERT's self-attention and its copies (same module, same names; each family's mha plan is
    # checked exact against it in tests/hf/test_hf_families.py)
    Host("bert", ("bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text", "ernie",
                  "roberta-prelayernorm", "xlm-roberta-xl", "megatron-bert"), "SelfAttention", ("query", "key", "value")),
    # MPNet (all-mpnet-base-v2): `q`/`k`/`v`/`o` in one module, and the encoder's relative-position
    # bias added to every layer's scores (`PlanAttention` passes it to the kinds that form scores)
    Host("mpnet", ("mpnet",), "MPNetSelfAttention", ("q", "k", "v"), out_proj="o", score_bias=(0, "position_bias"),
         attn_implementation="eager"),
    # DistilBERT: its attention module owns `out_lin`; scores use `scaling` (head_dim^-0.5)
    Host("distilbert", ("distilbert",), "DistilBertSelfAttention", ("q_lin", "k_lin", "v_lin"), out_proj="out_lin"),
    Host("vit", ("vit", "deit", "dinov2", "dinov2_with_registers", "ijepa", "vit_msn"), "Attention",
         ("q_proj", "k_proj", "v_proj"), out_proj="o_proj", inputs="pixel_values"),
    # BEiT (and DiT, saved as beit): a relative-position bias per head (a table per layer, or one
    # shared by all) that its layer hands the attention as `attention_mask`; `k_proj` has no bias
    Host("beit", ("beit",), "BeitAttention", ("q_proj", "k_proj", "v_proj"), out_proj="o_proj", inputs="pixel_values",
         mask_is_score_bias=True),
    # CLIP's and SigLIP's image towers saved on their own (`CLIPVisionModel`, `SiglipVisionModel`);
    # SigLIP's pooling head holds an nn.MultiheadAttention that is not a layer: the suffix is exact
    Host("clip", ("clip_vision_model",), "CLIPAttention", ("q_proj", "k_proj", "v_proj"), out_proj="out_proj",
         inputs="pixel_values"),
    Host("siglip", ("siglip_vision_model",), "SiglipAttention", ("q_proj", "k_proj", "v_proj"), out_proj="out_proj",
         inputs="pixel_values"),
    # ModernBERT: one fused `Wqkv`, output `Wo`, no biases by default; rotary position embeddings
    # (the model hands each layer its (cos, sin): a global and a local base) and, every few layers,
    # a sliding-window mask (`local_attention` tokens) that arrives as a full [B, 1, N, N] bias
    Host("modernbert", ("modernbert",), "ModernBertAttention", ("Wqkv",), out_proj="Wo", rotary="position_embeddings"),
    # Rotary BERT-style embedders: nomic-embed-text (`nomic_bert`) and gte-*-v1.5 / gte-multilingual
    # (`gte`); `q_proj`/`k_proj`/`v_proj`/`o_proj` in one module, each head's query and key rotated
    Host("nomic_bert", ("nomic_bert",), "NomicBertAttention", ("q_proj", "k_proj", "v_proj"), out_proj="o_proj",
         rotary="position_embeddings"),
    Host("gte", ("gte",), "GteAttention", ("q_proj", "k_proj", "v_proj"), out_proj="o_proj", rotary="position_embeddings"),
    # DeBERTa v2 / v3 (model_type "deberta-v2"): BERT's layout (the output projection in
    # `DebertaV2SelfOutput`), `query_proj` / `key_proj` / `value_proj`, and relative positions in
    # every layer's scores from its own projections of the encoder's relative embeddings
    Host("deberta-v2", ("deberta-v2",), "DisentangledSelfAttention", ("query_proj", "key_proj", "value_proj"),
         relative=True, attn_implementation="eager", unsupported=_SEPARATE_POSITION_PROJECTIONS),
    # EuroBERT: a Llama-style bidirectional encoder (RMSNorm, gated MLP, rotary heads); with
    # num_key_value_heads < num_attention_heads, keys and values have fewer heads than queries
    # (grouped-query attention): a plan's projections give every query head its own, the kv head's
    # rows repeated (`_per_query_head`)
    Host("eurobert", ("eurobert",), "EuroBertAttention", ("q_proj", "k_proj", "v_proj"), out_proj="o_proj",
         rotary="position_embeddings"),
    # Whisper's encoder: pre-norm layers, `WhisperAttention` owns `out_proj`; `k_proj` has no bias
    # (the kinds that keep it get a zero bias). Scores use the module's `scaling` (head_dim^-0.5).
    Host("whisper", ("whisper",), "WhisperAttention", ("q_proj", "k_proj", "v_proj"), out_proj="out_proj",
         model_class="WhisperEncoder",
         model_hint=" (the encoder alone: model.get_encoder() of a WhisperModel; attnreuse hosts encoder self-attention only)",
         inputs="input_features"),
    # wav2vec2 / HuBERT: the same encoder layer in both (post-norm in base models, pre-norm under
    # `do_stable_layer_norm` in large ones); the attention module owns `out_proj`, every projection
    # has a bias, scores use `scaling` (head_dim^-0.5). Every model class of theirs (Model, ForCTC,
    # ...) holds encoder self-attention only, so any converts.
    Host("wav2vec2", ("wav2vec2",), "Wav2Vec2Attention", ("q_proj", "k_proj", "v_proj"), out_proj="out_proj",
         inputs="input_values"),
    Host("hubert", ("hubert",), "HubertAttention", ("q_proj", "k_proj", "v_proj"), out_proj="out_proj",
         inputs="input_values"),
    # wav2vec2's descendants, same attention module and waveform front end: data2vec-audio, UniSpeech,
    # UniSpeech-SAT, and SEW (whose encoder attends on frames pooled by `squeeze_factor`, then
    # upsamples them back)
    *(Host(family, (family,), suffix, ("q_proj", "k_proj", "v_proj"), out_proj="out_proj", inputs="input_values")
      for family, suffix in (("data2vec-audio", "Data2VecAudioAttention"), ("unispeech", "UniSpeechAttention"),
                             ("unispeech-sat", "UniSpeechSatAttention"), ("sew", "SEWAttention"))),
    # SEW-D: SEW with DeBERTa's disentangled attention (the same module, relative terms included)
    Host("sew-d", ("sew-d",), "DisentangledSelfAttention", ("query_proj", "key_proj", "value_proj"), relative=True,
         inputs="input_values", attn_implementation="eager", unsupported=_SEPARATE_POSITION_PROJECTIONS),
    # Wav2Vec2-Conformer (the Conformer, where attention map reuse was first shown): wav2vec2's
    # feature encoder and Conformer layers (macaron FFNs, a convolution module). Its rotary variant
    # rotates the hidden states before the query / key projections; the relative variant adds a
    # Transformer-XL position term computed from every head's own query, which no shared map keeps.
    Host("wav2vec2-conformer", ("wav2vec2-conformer",), "Wav2Vec2ConformerSelfAttention",
         ("linear_q", "linear_k", "linear_v"), out_proj="linear_out", inputs="input_values",
         rotary="relative_position_embeddings", rotary_on="input", rotary_when=("position_embeddings_type", "rotary"),
         unsupported=(("position_embeddings_type", "relative",
                       "Transformer-XL relative positions (their score term needs every head's own query); "
                       "the rotary and the position-free variants are"),)),
)
SUPPORTED = tuple(t for h in HOSTS for t in h.model_types)
SPEECH_INPUTS = ("input_values", "input_features")  # the hosts whose data is waveforms (`attnreuse.hf.audio`)
VISION_INPUTS = ("pixel_values",)  # the hosts whose data is images (`attnreuse.hf.images`)


def fixed_length(config) -> int | None:
    """The one sequence length an encoder of `config` runs on: a Whisper encoder's
    max_source_positions frames, a vision encoder's patches and prefix tokens; None where it takes
    any (text up to its positions, raw waveforms)."""
    inputs = host_for(config).inputs
    if inputs in VISION_INPUTS:
        from attnreuse.hf.images import image_tokens

        return image_tokens(config)
    from attnreuse.hf.audio import fixed_frames

    return fixed_frames(config)


def modeling_class(model_type: str, name: str):
    """A model class by name, also one transformers does not export at top level (WhisperEncoder,
    from its model's module); None when neither has it."""
    import importlib

    import transformers

    found = getattr(transformers, name, None)
    if found is not None:
        return found
    try:
        package = model_type.replace("-", "_")
        module = importlib.import_module(f"transformers.models.{package}.modeling_{package}")
    except ImportError:
        return None
    return getattr(module, name, None)


def input_stem(model: nn.Module) -> nn.Module:
    """A model's input stem, which conversion and distillation keep as it is: the conv feature
    encoder of the wav2vec2 family (every model of it has one, not every one a
    `freeze_feature_encoder`), else the input embeddings (a text model's token table, Whisper's
    first conv, a vision model's patch embedding)."""
    stem = getattr(model, "feature_extractor", None)
    return stem if isinstance(stem, nn.Module) else model.get_input_embeddings()


# Text models whose position ids start after the padding index (RoBERTa's embeddings): they take
# max_position_embeddings - pad_token_id - 1 tokens.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "data2vec-text", "roberta-prelayernorm", "xlm-roberta-xl",
                     "mpnet")


def max_tokens(config) -> int | None:
    """The longest sequence a text model of `config` takes (its position embeddings); None for the
    others (speech models take any number of frames, or Whisper's one)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None or host_for(config).inputs != "input_ids":
        return None
    if config.model_type in _OFFSET_POSITIONS:
        positions -= (config.pad_token_id or 0) + 1
    return positions


def length_limit(config, max_length: int) -> int:
    """`max_length` (the tokens a job truncates its texts to), at most what a model of `config` takes."""
    limit = max_tokens(config)
    return max_length if limit is None else min(max_length, limit)


def host_for(config) -> Host:
    model_type = getattr(config, "model_type", None)
    for host in HOSTS:
        if model_type in host.model_types:
            if getattr(config, "is_decoder", False):
                raise ValueError(f"{model_type} configured as a decoder (is_decoder=True): attnreuse hosts encoders only")
            for attr, value, why in host.unsupported:
                if getattr(config, attr, None) == value:
                    raise ValueError(f"{model_type} with {attr}={value!r} is not supported: {why}")
            return host
    hint = _TOWERS.get(model_type) or _NOT_HOSTED.get(model_type)
    hint = f" ({hint})" if hint else ""
    raise ValueError(f"model_type {model_type!r} is not supported{hint}; supported: {', '.join(SUPPORTED)}")


# Composite models whose image tower is hosted: the tower's class, which loads it alone from the
# composite's directory (the jobs do so: `attnreuse.hf.source.load_source`)
TOWERS = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel"}
_TOWERS = {k: f"its image tower is: {v}.from_pretrained(DIR) loads it alone" for k, v in TOWERS.items()}
# Encoders near a hosted family that are not hosted, and why (the refusal says so)
_NOT_HOSTED = {
    "deberta": "DeBERTa v1's attention (a fused in_proj) is not hosted; v2 and v3 checkpoints, model_type "
               "'deberta-v2', are",
    "albert": "ALBERT applies one layer's weights in every layer, so a plan of one kind per layer has no layer "
              "of its own to change",
    "data2vec-vision": "its attention takes no mask and owns its position bias, unlike BEiT's, which is hosted",
}
