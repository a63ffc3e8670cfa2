"""The module that takes a host's attention module's place and runs one plan layer.

`PlanAttention` keeps the host's call signature (hidden states and mask in; output and no attention
weights out) and delegates to its kind (`attnreuse.plan`). Layers hand each other what a plan needs
through one `PlanState` shared by the model's plan layers: the maps later layers apply, and the
previous layer's attention output. Layer 0 clears it, so nothing outlives a forward.

A host with rotary position embeddings (ModernBERT, Wav2Vec2-Conformer) hands each layer its
(cos, sin); the layer puts it in the state, and its core's query and key projections
(`RotaryLinear`, the kind's own Linear with the same weights) rotate by it (their output heads, or
their input), so every kind that forms scores from queries and keys (mha, reuse, taylor, kvpool)
sees them rotated as the original did.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnreuse.hf.interface import as_bias
from attnreuse.layers.token_attention import MapSelfAttention, key_mask_from_bias
from attnreuse.plan import LayerSpec, get_kind

__all__ = ["PlanAttention", "PlanState", "RotaryLinear", "rotary_pair", "rotate_queries_and_keys"]


class PlanState:
    """Cross-layer values of one forward: maps [B, Hm, N, N] by producing layer, the previous output [B, N, C]."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.maps: dict[int, Tensor] = {}
        self.previous: Tensor | None = None
        self.rotary: tuple[Tensor, Tensor] | None = None  # the running layer's (cos, sin) [B, N, d]
        # the running layer's DeBERTa (rel_embeddings [2S, C], relative_pos [.., N, N]) (`attnreuse.hf.disentangled`)
        self.relative: tuple[Tensor, Tensor] | None = None


def rotary_pair(value, n: int) -> tuple[Tensor, Tensor]:
    """A host's rotary embeddings -> (cos, sin), each [B | 1, N, d]: a (cos, sin) pair as
    ModernBERT hands it, or cos and sin stacked [2, >= N, 1, 1, d] as Wav2Vec2-Conformer does."""
    if isinstance(value, (tuple, list)):
        return value[0], value[1]
    return value[0, :n, 0, 0][None], value[1, :n, 0, 0][None]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, head_dim: int) -> Tensor:
    """x [B, N, k * head_dim], each head_dim chunk rotated (rotate-half layout) by cos, sin [B | 1, N, d]."""
    if cos.shape[-1] != head_dim:
        raise ValueError(f"rotary embeddings of width {cos.shape[-1]}, heads of {head_dim}: attnreuse rotates whole heads")
    batch, tokens, width = x.shape
    heads = x.reshape(batch, tokens, width // head_dim, head_dim).float()  # [B, N, k, d]
    half = head_dim // 2
    rotated = torch.cat((-heads[..., half:], heads[..., :half]), dim=-1)
    return (heads * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)).to(x.dtype).reshape(batch, tokens, width)


class RotaryLinear(nn.Linear):
    """A query or key projection rotated by the running layer's (cos, sin) (`PlanState.rotary`), in
    the rotate-half layout, in float32 as transformers does: x [B, N, C] -> [B, N, out_features].
    `on="heads"`: its output heads of width `head_dim` are rotated (ModernBERT); `on="input"`: its
    input, in chunks of `head_dim`, before the projection (Wav2Vec2-Conformer). The parameters are an
    nn.Linear's (same names), so a converted model's weights save and load as they are."""

    def __init__(self, linear: nn.Linear, head_dim: int, state: PlanState, on: str = "heads") -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        if on not in ("heads", "input"):
            raise ValueError(f"on must be 'heads' or 'input', got {on!r}")
        self.weight, self.bias = linear.weight, linear.bias
        self.head_dim, self.on = head_dim, on
        self._state = state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rotary on its {self.on} (heads of {self.head_dim})"

    def forward(self, x: Tensor) -> Tensor:
        if self._state.rotary is None:
            raise ValueError("a rotary projection ran without the layer's position embeddings (cos, sin)")
        cos, sin = self._state.rotary
        if self.on == "input":
            return super().forward(_rotate(x, cos, sin, self.head_dim))
        return _rotate(super().forward(x), cos, sin, self.head_dim)


def rotate_queries_and_keys(core: nn.Module, head_dim: int, state: PlanState, on: str = "heads") -> None:
    """Make `core`'s `query` and `key` Linear layers (where it has them) `RotaryLinear`s."""
    for name in ("query", "key"):
        linear = getattr(core, name, None)
        if isinstance(linear, nn.Linear) and not isinstance(linear, RotaryLinear):
            setattr(core, name, RotaryLinear(linear, head_dim, state, on))


class PlanAttention(nn.Module):
    """Layer `index` of a plan: hidden_states [B, N, C], attention_mask (additive or bool,
    broadcastable to [B, 1, N, N]) -> (output [B, N, C], None).

    `core`: the kind's module (`Kind.retrofit`); `out_proj`: the host's output projection when the
    replaced module owned one (else None, and the host projects after this module); `score_bias`:
    where the host's call passes a per-head score bias (`Host.score_bias`, MPNet's), else None;
    `rotary`: the keyword of the host's (cos, sin) position embeddings (`Host.rotary`), else None;
    `mask_is_score_bias`: the host's `attention_mask` is a per-head score bias [1 | B, H, N, N], not
    padding (BEiT's relative-position bias; its images have no padding), taken as `score_bias` is.
    DeBERTa's relative-position inputs (keywords `rel_embeddings`, `relative_pos`), where a call
    carries them, go into the state for the core's score term (`attnreuse.hf.disentangled`).
    """

    def __init__(self, core: nn.Module, spec: LayerSpec, index: int, map_source: int | None,
                 emit_map: bool, state: PlanState, out_proj: nn.Module | None = None,
                 score_bias: tuple[int, str] | None = None, rotary: str | None = None,
                 mask_is_score_bias: bool = False) -> None:
        super().__init__()
        self.mask_is_score_bias = mask_is_score_bias
        self.rotary = rotary
        self.core = core
        self.out_proj = out_proj
        self.score_bias = score_bias
        self.spec = spec
        self.kind = get_kind(spec.kind)
        self.index = index
        self.map_source = map_source
        self.emit_map = emit_map
        self._state = state

    def extra_repr(self) -> str:
        src = f", applies the map of layer {self.map_source}" if self.map_source is not None else ""
        return f"layer={self.index}, kind={self.spec}{src}" + (", emits its map" if self.emit_map else "")

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None, *args, **kwargs):
        state = self._state
        if self.index == 0:
            state.clear()
        if self.mask_is_score_bias:
            bias, key_mask = self._grouped(None, attention_mask), None
        else:
            bias = as_bias(attention_mask, hidden_states.dtype)
            key_mask = key_mask_from_bias(bias, hidden_states.shape[1]) if bias is not None else None
        if self.score_bias is not None:
            index, name = self.score_bias
            bias = self._grouped(bias, args[index] if len(args) > index else kwargs.get(name))
        if self.rotary is not None:
            value = kwargs.get(self.rotary)
            state.rotary = None if value is None else rotary_pair(value, hidden_states.shape[1])
        rel = kwargs.get("rel_embeddings")
        state.relative = None if rel is None else (rel, kwargs["relative_pos"])
        attn_map = state.maps.get(self.map_source) if self.map_source is not None else None
        out, new_map = self.kind.run(self.core, hidden_states, bias, key_mask, attn_map, state.previous, self.emit_map)
        if new_map is not None:
            state.maps[self.index] = new_map
        state.previous = out
        if self.out_proj is not None:
            out = self.out_proj(out)
        return out, None

    def _grouped(self, bias: Tensor | None, extra: Tensor | None) -> Tensor | None:
        """The padding bias plus the host's per-head score bias `extra` [B | 1, H, N, N] (MPNet's and
        BEiT's relative positions), for a core that forms its maps from scores: each of its G maps
        takes the mean bias of the H / G heads it serves (G = H: each head's own). Kinds that apply
        an earlier map (share: its bias is in that map), skip and linear or pooled attention take the
        padding alone."""
        if extra is None or not isinstance(self.core, MapSelfAttention):
            return bias
        G, H = self.core.qk_heads, extra.shape[1]
        if G == 1:
            extra = extra.mean(1, keepdim=True)
        elif G != H:  # sizes spelled out, not unflatten: ONNX shape inference follows that reshape (fused exports)
            b, _, n, m = extra.shape
            extra = extra.reshape(b, G, H // G, n, m).mean(2)
        return extra if bias is None else bias + extra
