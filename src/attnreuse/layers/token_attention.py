"""Self-attention cores for sequence encoders (BERT / ViTModel style): tokens in, heads merged out,
no output projection (the host's own output block projects, adds the residual and normalises).

Papers: multi-head attention; Reuse Attention (UniForm: one map for every value head); attention
map reuse across layers (Shim, Choi, Sung 2023: a later layer projects V only); SkipAt (ICLR 2024)
on a 1-D token sequence; ViTALiTy (HPCA 2023) linear Taylor attention.

Shapes: x: [B, N, C] -> [B, N, C]. Padding is given as `key_bias` [B, 1, 1, N] (additive: 0 for a
real token, a large negative number for padding) or as `key_mask` [B, N] (True = real token); both
mask keys only, as a bidirectional encoder's padding does. Parameter names follow the Hugging Face
encoders (`query`, `key`, `value`), so a BERT / ViT self-attention's weights load as they are.
Inner steps are marked with `layers.parts.part` (scores + softmax, A.V, a one-step core), so a
timer can attribute a real forward to them; unrecorded, the marks cost a function call each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse import ops
from attnreuse.layers._checks import check_divides, check_positive_int, check_tokens
from attnreuse.layers.parts import part

__all__ = ["MapSelfAttention", "SequencePhi", "SharedMapSelfAttention", "TaylorSelfAttention", "key_mask_from_bias"]


def key_mask_from_bias(key_bias: Tensor | None, n: int) -> Tensor | None:
    """[B, 1, 1|N, N] additive (or bool) bias -> [B, N] bool (True = real token); None stays None.

    A key is real when some query may attend to it: with key-only padding every row is the same,
    and a sliding-window mask (ModernBERT's local layers) hides each key from the far queries only.
    """
    if key_bias is None:
        return None
    keep = key_bias if key_bias.dtype == torch.bool else key_bias > torch.finfo(key_bias.dtype).min / 2
    return keep[:, 0].any(dim=-2)[:, :n]


def _heads(t: Tensor, heads: int) -> Tensor:
    """[B, N, heads * d] -> [B, heads, N, d]."""
    B, N, _ = t.shape
    return t.view(B, N, heads, -1).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    """[B, H, N, d] -> [B, N, H * d]."""
    B, H, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, H * d)


class MapSelfAttention(nn.Module):
    """Softmax attention with `qk_heads` maps shared by `num_heads` value heads (value head j uses
    map j // (num_heads // qk_heads)); `qk_heads == num_heads` is multi-head attention, 1 is Reuse
    Attention. `query`, `key`: Linear(C -> qk_dim), `value`: Linear(C -> C).

    forward(x, key_bias=None, return_map=False) -> out [B, N, C] (and the map [B, qk_heads, N, N]).
    `score_term` (None, or a callable set by a host): (q, k) [B, qk_heads, N, d] -> an additive
    score term [B, qk_heads, N, N], already scaled, added to the scores with `key_bias`: a relative
    position scheme computed from the layer's own queries and keys (DeBERTa's). Without `return_map` the map is never materialised (`ops.softmax_attention`); with it, the ops
    backend decides how it is written (dense: scores, softmax, A.V as separate steps; auto: the
    native kernel in float32 CPU inference, else the dense map or, under a gradient, the FLAT tiles;
    tiled: the FLAT kernel writing each tile's probabilities as it applies them; native: the
    native kernel; sdpa cannot and raises).
    """

    def __init__(self, dim: int, num_heads: int, qk_heads: int | None = None, qk_dim: int | None = None,
                 bias: bool = True, scale: float | None = None) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_divides("num_heads", num_heads, "dim", dim)
        self.dim, self.num_heads = dim, num_heads
        self.qk_heads = num_heads if qk_heads is None else check_positive_int("qk_heads", qk_heads)
        check_divides("qk_heads", self.qk_heads, "num_heads", num_heads)
        self.qk_dim = self.qk_heads * (dim // num_heads) if qk_dim is None else check_positive_int("qk_dim", qk_dim)
        check_divides("qk_heads", self.qk_heads, "qk_dim", self.qk_dim)
        self.scale = (self.qk_dim // self.qk_heads) ** -0.5 if scale is None else float(scale)
        self.query = nn.Linear(dim, self.qk_dim, bias=bias)
        self.key = nn.Linear(dim, self.qk_dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, qk_heads={self.qk_heads}, qk_dim={self.qk_dim}"

    score_term = None  # a plain callable, not a submodule: it holds no weights of its own

    def forward(self, x: Tensor, key_bias: Tensor | None = None, return_map: bool = False):
        check_tokens(x, self.dim)
        q, k = _heads(self.query(x), self.qk_heads), _heads(self.key(x), self.qk_heads)
        v = _heads(self.value(x), self.num_heads)
        term = None if self.score_term is None else self.score_term(q, k)
        if term is not None:
            key_bias = term if key_bias is None else key_bias + term
        if ops.get_backend() == "dense":
            # What softmax_attention's dense path runs, step by step (so each step can be timed).
            with part("scores_softmax"):
                attn = ops.attention_map(q, k, scale=self.scale, bias=key_bias)
            with part("av"):
                out = _merge(ops.apply_map(attn, v))
            return (out, attn) if return_map else out
        # One step: fused SDPA, the native kernel or the FLAT tiles, which also write a returned map.
        with part("core"):
            res = ops.softmax_attention(q, k, v, scale=self.scale, bias=key_bias, return_map=return_map)
        return (_merge(res[0]), res[1]) if return_map else _merge(res)


class SharedMapSelfAttention(nn.Module):
    """A layer that applies an earlier layer's map to its own values: `value` Linear(C -> C) only.

    forward(x, attn_map [B, Hm, N, N] with num_heads % Hm == 0) -> [B, N, C]. Padding needs no
    argument: the earlier layer's map already gives padded keys probability 0.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_divides("num_heads", check_positive_int("num_heads", num_heads), "dim", dim)
        self.dim, self.num_heads = dim, num_heads
        self.value = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor, attn_map: Tensor) -> Tensor:
        check_tokens(x, self.dim)
        v = _heads(self.value(x), self.num_heads)
        with part("av"):
            return _merge(ops.apply_map(attn_map, v))


class TaylorSelfAttention(nn.Module):
    """ViTALiTy's first-order Taylor attention with keys centred over the real tokens:
    out_i = (sum_j m_j v_j + s q_i sum_j m_j k~_j v_j^T) / L, k~_j = k_j - mean_{m_j} k, L = sum_j m_j
    (the denominator is L because sum_j m_j k~_j = 0). Without padding it is
    `ops.taylor_attention(..., center="tokens")`; with padding the same formula on the real tokens
    of each sequence. `query`, `key`, `value`: Linear(C -> C). Cost O(N d^2).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_divides("num_heads", check_positive_int("num_heads", num_heads), "dim", dim)
        self.dim, self.num_heads = dim, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        check_tokens(x, self.dim)
        H = self.num_heads
        q, k, v = _heads(self.query(x), H), _heads(self.key(x), H), _heads(self.value(x), H)
        with part("core"):
            return _merge(self._attend(q, k, v, key_mask))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
        """q, k, v [B, H, N, d] -> [B, H, N, d]."""
        if key_mask is None:
            return ops.taylor_attention(q, k, v, scale=self.scale, center="tokens")
        m = key_mask[:, None, :, None].to(q.dtype)  # [B, 1, N, 1]
        count = m.sum(2, keepdim=True)  # [B, 1, 1, 1]
        k_c = (k - (k * m).sum(2, keepdim=True) / count) * m  # padded keys contribute nothing
        vm = v * m
        kv = k_c.transpose(-1, -2) @ vm  # [B, H, d, d]
        return (vm.sum(2, keepdim=True) + self.scale * (q @ kv)) / count


class SequencePhi(nn.Module):
    """SkipAt's Phi on a 1-D token sequence: prev [B, N, C] -> [B, N, C].

    Linear(C -> hidden) + GELU -> depthwise Conv1d over tokens + GELU -> Linear(hidden -> C) ->
    efficient channel attention on the mean over real tokens. The paper's Phi convolves the 2-D
    patch grid; a text sequence has one axis, so the depthwise convolution runs along it. Padded
    tokens are zeroed before the convolution, so a padded sequence gives the same output on its
    real tokens as the unpadded one (the convolution's own zero padding).
    Parameters: `fc1`, `dwconv`, `fc2`, `eca` (Conv1d over channels).
    """

    def __init__(self, dim: int, hidden_dim: int | None = None, kernel_size: int = 5, eca_kernel_size: int = 3) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        hidden = 2 * dim if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)
        for name, size in (("kernel_size", kernel_size), ("eca_kernel_size", eca_kernel_size)):
            if check_positive_int(name, size) % 2 == 0:
                raise ValueError(f"{name} must be odd to keep the length, got {size}")
        self.dim = dim
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.eca = nn.Conv1d(1, 1, eca_kernel_size, padding=eca_kernel_size // 2, bias=False)

    def forward(self, prev: Tensor, key_mask: Tensor | None = None) -> Tensor:
        check_tokens(prev, self.dim)
        with part("core"):
            return self._phi(prev, key_mask)

    def _phi(self, prev: Tensor, key_mask: Tensor | None) -> Tensor:
        m = None if key_mask is None else key_mask[:, :, None].to(prev.dtype)  # [B, N, 1]
        h = F.gelu(self.fc1(prev))
        if m is not None:
            h = h * m
        h = F.gelu(self.dwconv(h.transpose(1, 2))).transpose(1, 2)
        h = self.fc2(h)
        pooled = h.mean(1, keepdim=True) if m is None else (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        return h * torch.sigmoid(self.eca(pooled))
