"""`kvpool:R`: key/value token pooling. Queries attend to keys and values averaged over windows of
R consecutive tokens, through the dense layer's own Q/K/V projections.

It is the spatial-reduction attention of PVT (Wang et al., "Pyramid Vision Transformer", ICCV 2021),
which shortens the key/value sequence before attention, a compression in the Linformer family
(Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020, which projects it to a fixed
length) but with no parameters of its own: an average replaces PVT's strided convolution and
Linformer's learnt projections, so a dense layer retrofits zero-shot. N keys become
M = ceil(N / R): scores + softmax and A.V shrink by 1 - 1/R; the projections stay as they are.

What a pooled key stands for: a query's score against a window's mean key is the mean of its
scores against the window's keys (q . mean(k) = mean(q . k)), and the pooled value is the mean of
its values. In dense attention a window of c real tokens weighs as c keys, so its pooled key gets
the additive score term log(c / R): 0 for a full window, less for a short one (the last window when
R does not divide N, a window cut by padding); a window with no real token is masked out (the
dtype's most negative bias). A window holding one token repeated then weighs what its copies weigh
in the dense layer, so on such inputs kvpool is the dense layer exactly (tested).

Hosts:
- transformers encoders (`retrofit` / `run`): every token is pooled, padding as `key_mask` [B, N]
  (True = real token; averages run over real tokens only). Only key padding is honoured: another
  additive bias (relative positions) is not pooled.
- the attnreuse ViT (`vit_modules` / `vit_attend`): timm's `qkv`, `q_norm`, `k_norm`, `proj`, so a
  dense block's weights load as they are. The prefix (class) tokens stay keys of their own and only
  the patch tokens are pooled, in raster order (windows of R patches along a row, wrapping at the
  row's end when R does not divide the width): a class token aggregates the image, and averaging
  it with a patch would blur both; pooling along the sequence keeps one definition, and one cost,
  for both hosts (PVT pools R x R squares of the grid: a reduction of R^2, its sides divisible by R).

The default R is 2: retrofitted zero-shot, with no fitting, the least pooling keeps each window's
keys closest to the dense layer's (neighbouring tokens' scores averaged in pairs) and still removes
half of scores + softmax and A.V; larger R is for distilled or trained models (PVT, trained from
scratch, reduces its four stages' keys by 8 x 8, 4 x 4, 2 x 2 and 1). The default is written into
the plan ("kvpool" is recorded as "kvpool:2"), so a saved plan keeps its meaning if it changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse import ops
from attnreuse.layers._checks import check_divides, check_positive_int, check_rate, check_tokens
from attnreuse.layers._qkv import FusedQkvAttention
from attnreuse.layers.parts import part
from attnreuse.plan._copy import KeepsQKV, copy_projections
from attnreuse.plan.registry import register_kind

__all__ = ["DEFAULT_POOL", "KVPool", "KVPoolAttention", "KVPoolSelfAttention", "pool_keys_values"]

DEFAULT_POOL = 2


def pool_keys_values(
    k: Tensor, v: Tensor, pool: int, key_mask: Tensor | None = None, keep: int = 0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Keys and values averaged over windows of `pool` consecutive tokens after the first `keep`.

    k: [B, H, N, Dk], v: [B, H, N, Dv], key_mask: [B, N] bool (True = real token) or None ->
    (k', v' [B, H, keep + M, D], bias [B|1, 1, 1, keep + M] or None), M = ceil((N - keep) / pool).
    The first `keep` tokens pass as they are; each window averages its real tokens. bias: log(c / pool)
    for a key standing for c real tokens (a kept token: c = 1), the dtype's most negative number for
    c = 0; None without a mask or kept tokens when `pool` divides N (every window full: nothing to add).
    No shape arithmetic: the pooling is `avg_pool2d` over the token axis of sequences zero-padded by
    pool - 1 tokens, so a traced graph (ONNX export) keeps N dynamic.
    """
    window = (pool, 1)
    if key_mask is None and keep == 0 and k.shape[2] % pool == 0:
        return F.avg_pool2d(k, window), F.avg_pool2d(v, window), None

    def window_sums(t: Tensor) -> Tensor:
        """[B, C, n, D] -> [B, C, ceil(n / pool), D]: each window's sum / pool (the zero padding
        fills the last window, so every average divides by pool)."""
        return F.avg_pool2d(F.pad(t, (0, 0, 0, pool - 1)), window)

    real = torch.ones_like(k[:1, :1, :, :1]) if key_mask is None else key_mask[:, None, :, None].to(k.dtype)
    share = window_sums(real[:, :, keep:])  # c / pool per window: [B|1, 1, M, 1]
    divisor = torch.where(share > 0, share, torch.ones_like(share))

    def pool_tokens(t: Tensor) -> Tensor:
        pooled = window_sums(t[:, :, keep:] * real[:, :, keep:]) / divisor  # padding weighs 0
        return torch.cat([t[:, :, :keep], pooled], dim=2) if keep else pooled

    if keep:
        share = torch.cat([real[:, :, :keep] / pool, share], dim=2)
    bias = share.clamp(min=torch.finfo(k.dtype).tiny).log().masked_fill(share == 0, torch.finfo(k.dtype).min)
    return pool_tokens(k), pool_tokens(v), bias.transpose(2, 3)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None) -> Tensor:
    """softmax(scale q k^T + bias) v through the ops backend, the steps marked as the mha core marks
    them (dense: scores + softmax, then A.V; otherwise one step)."""
    if ops.get_backend() == "dense":
        with part("scores_softmax"):
            attn = ops.attention_map(q, k, scale=scale, bias=bias)
        with part("av"):
            return ops.apply_map(attn, v)
    with part("core"):
        return ops.softmax_attention(q, k, v, scale=scale, bias=bias)


class KVPoolSelfAttention(nn.Module):
    """The transformers-host core: `query`, `key`, `value` Linear(C -> C) (the encoders' names), keys
    and values pooled over windows of `pool` tokens. x [B, N, C], key_mask [B, N] -> [B, N, C]
    (heads merged; the host projects). Pooling is not a marked step: a timer counts it in the
    attention module's own time."""

    def __init__(self, dim: int, num_heads: int, pool: int = DEFAULT_POOL, bias: bool = True,
                 scale: float | None = None) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_divides("num_heads", check_positive_int("num_heads", num_heads), "dim", dim)
        if check_positive_int("pool", pool) < 2:
            raise ValueError(f"pool must be an int >= 2 (tokens per key/value window), got {pool}")
        self.dim, self.num_heads, self.pool = dim, num_heads, pool
        self.scale = (dim // num_heads) ** -0.5 if scale is None else float(scale)
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, pool={self.pool}"

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        check_tokens(x, self.dim)
        B, N, C = x.shape
        q, k, v = (lin(x).view(B, N, self.num_heads, -1).transpose(1, 2) for lin in (self.query, self.key, self.value))
        k, v, bias = pool_keys_values(k, v, self.pool, key_mask)
        return _attend(q, k, v, self.scale, bias).transpose(1, 2).reshape(B, N, C)


class KVPoolAttention(FusedQkvAttention):
    """The ViT-host attention: timm's layout (`qkv`, `q_norm`, `k_norm`, `proj`), the keys and values
    of the patch tokens pooled over windows of `pool` (the first `num_prefix_tokens` kept).
    x [B, N, C] -> [B, N, C]. Attention dropout, when training with `attn_drop > 0`, runs on a
    materialised map."""

    def __init__(self, dim: int, num_heads: int = 8, pool: int = DEFAULT_POOL, num_prefix_tokens: int = 1,
                 attn_drop: float = 0.0, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        if check_positive_int("pool", pool) < 2:
            raise ValueError(f"pool must be an int >= 2 (tokens per key/value window), got {pool}")
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
        self.pool, self.num_prefix_tokens = pool, num_prefix_tokens
        self.attn_drop = nn.Dropout(check_rate("attn_drop", attn_drop))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, pool={self.pool}, kept={self.num_prefix_tokens}"

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        k, v, bias = pool_keys_values(k, v, self.pool, keep=self.num_prefix_tokens)
        if self.training and self.attn_drop.p > 0:
            attn = ops.attention_map(q, k, scale=self.scale, bias=bias)
            return ops.apply_map(self.attn_drop(attn), v)
        return ops.softmax_attention(q, k, v, scale=self.scale, bias=bias)


class KVPool(KeepsQKV):
    name = "kvpool"
    arg_syntax = "kvpool:R"
    help = "keys and values averaged over windows of R tokens (PVT's spatial reduction, parameter-free)"

    def parse_arg(self, arg, num_heads, where):
        if not arg:
            return DEFAULT_POOL
        if not arg.isdigit() or int(arg) < 2:
            raise ValueError(f"{where}: R in 'kvpool:R' must be an int >= 2 (tokens per key/value window), e.g. kvpool:2")
        return int(arg)

    def retrofit(self, spec, src):
        core = KVPoolSelfAttention(src.dim, src.num_heads, spec.arg, bias=src.biases["query"] is not None,
                                   scale=src.scale)
        return copy_projections(core, src)

    def removed_parts(self, spec, num_heads):
        kept = 1.0 / spec.arg  # M = N / R keys (ceil, and the ViT's class token, aside)
        return {"scores_softmax": 1.0 - kept, "av": 1.0 - kept}  # pooling, O(N C), takes their place

    def vit_modules(self, spec, args):
        attn = KVPoolAttention(
            args.dim, args.num_heads, pool=spec.arg, num_prefix_tokens=args.num_prefix_tokens,
            attn_drop=args.attn_drop, qkv_bias=args.qkv_bias, qk_norm=args.qk_norm, proj_bias=args.proj_bias,
            proj_drop=args.proj_drop, norm_layer=args.norm_layer,
        )  # fmt: skip
        return {"norm1": args.norm_layer(args.dim), "attn": attn}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        return block.attn(block.norm1(x)), None


register_kind(KVPool())
