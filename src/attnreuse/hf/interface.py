"""attnreuse registered in `transformers`' own attention registries, as "attnreuse".

`AttentionInterface`: the attention function runs `attnreuse.ops.softmax_attention` (FLAT
row-tiled exact attention, or PyTorch's fused kernel where the backend picks it), so
`attn_implementation="attnreuse"` works on any model whose attention goes through the interface.
`AttentionMaskInterface`: a bidirectional (encoder) mask becomes a key-padding bias [B, 1, 1, M]
(linear in M, not the [B, 1, N, M] matrix eager attention builds); any other mask pattern (causal,
sliding, packed) is built in full by transformers' eager mask function.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnreuse import ops

__all__ = ["NAME", "attention_forward", "key_padding_mask", "register"]

NAME = "attnreuse"


def as_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A transformers attention mask (bool or integer: nonzero = attend; or additive float) -> additive
    float bias. DeBERTa hands its layers an integer [B, 1, N, N] mask."""
    if mask is None or mask.is_floating_point():
        return mask
    mask = mask.bool()
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                      scaling: float | None = None, dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    """The `AttentionInterface` signature: q, k, v [B, H, N|M, d], mask broadcastable to [B, H, N, M]
    -> (out [B, N, H, d], None). Attention weights are never returned (they are never materialised)."""
    if key.shape[1] != query.shape[1]:
        raise ValueError(
            f"attnreuse attention needs as many key/value heads as query heads, got {key.shape[1]} and {query.shape[1]}"
        )
    bias = as_bias(attention_mask, query.dtype)
    if bias is not None and bias.shape[-1] != key.shape[2]:
        bias = bias[..., : key.shape[2]]
    if dropout > 0.0 and module.training:
        attn = torch.nn.functional.dropout(ops.attention_map(query, key, scale=scaling, bias=bias), p=dropout)
        out = ops.apply_map(attn, value)
    else:
        out = ops.softmax_attention(query, key, value, scale=scaling, bias=bias)
    return out.transpose(1, 2).contiguous(), None


def key_padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     mask_function=None, attention_mask: Tensor | None = None, dtype: torch.dtype = torch.float32,
                     **kwargs) -> Tensor | None:
    """`AttentionMaskInterface` signature. Bidirectional: None without padding, else [B, 1, 1, M]."""
    from transformers.masking_utils import bidirectional_mask_function, eager_mask

    if mask_function is not bidirectional_mask_function:
        return eager_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                          kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                          dtype=dtype, **kwargs)
    if attention_mask is None:
        return None
    if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()) and bool(attention_mask.all()):
        return None  # no padding: no bias at all (data-dependent, so not while a graph is traced)
    keep = attention_mask[:, None, None, kv_offset : kv_offset + kv_length].bool()
    return as_bias(keep, dtype)


def register() -> str:
    """Register "attnreuse" with transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, key_padding_mask)
    return NAME
