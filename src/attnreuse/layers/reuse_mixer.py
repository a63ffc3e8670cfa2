"""Windowed Reuse Attention token mixer (UniForm, seed 000): one attention map per window, reused
by every head.

On a map x: [B, C, H, W], inside each ws x ws window (N = ws * ws tokens):
  [Q; K] = BN(Conv1x1(x))            C -> C/2, Q and K of C/4 channels: one query/key for all heads
  Q      = BN(DWConv_k0(Q))           k0 = kernels[0]
  A      = softmax(Q^T K / sqrt(key_dim) + bias)      one N x N map (LeViT relative-position bias)
  V_i    = DWConv_ki(x_i)             x_i: the i-th of h channel chunks (C/h channels); no value projection
  O_i    = V_i A^T                    the same A for every head
  Y      = BN(Conv1x1(ReLU(concat_i O_i)))            C -> C, BN weight initialised to 0
With one map for every head, concat_i O_i = V A^T is one [C, N] x [N, N] product over all channels
(`ops.softmax_attention` with Hq = 1 and Hv = h computes the same; windows are small, so the map is
formed densely here, without that operator's row tiles and checks). The h value convs
are ONE depthwise conv whose kernel is the largest k_i, with each head's kernel zero outside its
k_i x k_i centre (a fixed mask keeps it so during training): one call instead of a loop over heads.
Maps that are not exactly one window are zero-padded to whole windows, and all windows run as one
batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models import register_notrace_module
from torch import Tensor, nn

from attnreuse.layers.conv import ConvBN
from attnreuse.ops.backend import is_exporting

__all__ = ["ReuseAttention2d", "window_partition", "window_reverse"]


def window_partition(x: Tensor, ws: int, channels_last: bool = True) -> tuple[Tensor, int, int]:
    """x: [B, C, H, W] -> windows [B * nH * nW, C, ws, ws] (zero padding at bottom/right), nH, nW.

    Windows are ordered row-major within each image, images one after another. One copy, into
    channels-last memory (depthwise convs on CPU run faster on it, and tokens come out as rows)
    or, with channels_last=False, into plain NCHW windows (one transpose in an exported graph).
    """
    B, C, H, W = x.shape
    pad_b, pad_r = (-H) % ws, (-W) % ws
    if pad_b or pad_r:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    nH, nW = (H + pad_b) // ws, (W + pad_r) // ws
    if not channels_last:
        x = x.reshape(B, C, nH, ws, nW, ws).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B * nH * nW, C, ws, ws), nH, nW
    x = x.reshape(B, C, nH, ws, nW, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B * nH * nW, ws, ws, C).permute(0, 3, 1, 2), nH, nW


def window_reverse(windows: Tensor, nH: int, nW: int, H: int, W: int, channels_last: bool = True) -> Tensor:
    """Inverse of `window_partition`: [B * nH * nW, C, ws, ws] -> [B, C, H, W] (padding cropped).

    One copy, into channels-last memory (the result is a [B, C, H, W] view of [B, H, W, C]): the
    mixer's windows arrive token-major, so this is a copy along whole channel rows. With
    channels_last=False the windows are NCHW and so is the result.
    """
    Bw, C, ws, _ = windows.shape
    B = Bw // (nH * nW)
    crop = nH * ws != H or nW * ws != W  # only when padded: a no-op crop is two Slice copies in ONNX
    if not channels_last:
        x = windows.reshape(B, nH, nW, C, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(B, C, nH * ws, nW * ws)
        return x[:, :, :H, :W] if crop else x
    x = windows.permute(0, 2, 3, 1).reshape(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, nH * ws, nW * ws, C)
    return (x[:, :H, :W] if crop else x).permute(0, 3, 1, 2)


def _check_config(dim: int, num_heads: int, key_dim: int, window_size: int, kernels: Sequence[int]) -> None:
    for name, value in (("dim", dim), ("num_heads", num_heads), ("key_dim", key_dim), ("window_size", window_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if dim % 4 or dim % num_heads:
        raise ValueError(
            f"dim must be divisible by 4 (Q and K take C/4 channels each) and by num_heads={num_heads}, got {dim}"
        )
    if len(kernels) < num_heads or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
        raise ValueError(
            f"kernels must hold at least num_heads={num_heads} odd positive ints (one per value head), "
            f"got {tuple(kernels)!r}"
        )


@register_notrace_module  # the window padding branches on the input size
class ReuseAttention2d(nn.Module):
    """Reuse Attention in local windows. x: [B, dim, H, W] -> [B, dim, H, W], any H, W >= 1
    (the output is channels-last in memory; a residual add onto x returns PyTorch's default layout).

    Args:
        dim: channels C (divisible by 4 and by num_heads).
        num_heads: value heads h; each takes C/h channels and its own value kernel.
        key_dim: sets the score scale key_dim ** -0.5 (the query/key width is C/4 regardless).
        window_size: ws; the relative-position bias table has ws * ws entries.
        kernels: kernels[0] is the query's depthwise kernel, kernels[i] head i's value kernel.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        key_dim: int = 16,
        window_size: int = 7,
        kernels: Sequence[int] = (1, 3, 5, 7),
    ):
        super().__init__()
        _check_config(dim, num_heads, key_dim, window_size, kernels)
        self.dim, self.num_heads, self.key_dim, self.window_size = dim, num_heads, key_dim, window_size
        self.kernels = tuple(kernels[:num_heads])
        self.scale = key_dim**-0.5
        qk_dim = dim // 4
        self.qk = ConvBN(dim, 2 * qk_dim)
        self.q_dw = ConvBN(qk_dim, qk_dim, kernels[0], groups=qk_dim)
        k_max = max(self.kernels)
        self.v_dw = nn.Conv2d(dim, dim, k_max, padding=k_max // 2, groups=dim)
        self.register_buffer("v_mask", self._value_mask(), persistent=False)
        self.act = nn.ReLU()
        self.proj = ConvBN(dim, dim, bn_weight_init=0.0)
        self.attention_biases = nn.Parameter(torch.zeros(1, window_size * window_size))
        self.register_buffer("attention_bias_idxs", self._bias_index(), persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)
        self._init_values()

    def _value_mask(self) -> Tensor:
        """[C, 1, k_max, k_max]: 1 inside head i's centred k_i x k_i kernel, 0 outside."""
        k_max, d = max(self.kernels), self.dim // self.num_heads
        mask = torch.zeros(self.dim, 1, k_max, k_max)
        for i, k in enumerate(self.kernels):
            lo = (k_max - k) // 2
            mask[i * d:(i + 1) * d, :, lo:lo + k, lo:lo + k] = 1.0
        return mask

    def _bias_index(self) -> Tensor:
        """[N, N] index into the bias table: |dy| * ws + |dx| for every pair of window positions."""
        ws = self.window_size
        pos = torch.arange(ws * ws)
        dy = (pos[:, None] // ws - pos[None, :] // ws).abs()
        dx = (pos[:, None] % ws - pos[None, :] % ws).abs()
        return dy * ws + dx

    @torch.no_grad()
    def _init_values(self) -> None:
        """Each head's kernel as a k_i x k_i depthwise conv would be initialised (fan-in k_i^2)."""
        d = self.dim // self.num_heads
        for i, k in enumerate(self.kernels):
            self.v_dw.weight[i * d:(i + 1) * d].uniform_(-1.0 / k, 1.0 / k)
            self.v_dw.bias[i * d:(i + 1) * d].uniform_(-1.0 / k, 1.0 / k)
        self.v_dw.weight.mul_(self.v_mask)

    def attention_bias(self) -> Tensor:
        """The [N, N] relative-position bias shared by all heads (precomputed by `fuse()`)."""
        if self.fused_bias is not None:
            return self.fused_bias
        return self.attention_biases[0, self.attention_bias_idxs]

    def _attend(self, x: Tensor) -> Tensor:
        """x: [Bw, C, ws, ws] windows in channels-last memory -> concat_i O_i: [Bw, C, ws, ws], the
        same memory format.

        With one map for every head, concat_i O_i = V A^T is ONE product over all C channels:
        in token-major (channels-last) memory, [N, N] x [N, C] per window, with no head split and
        no transposes (q, k and v are free views of their convs' outputs). Windows hold at most
        ws * ws tokens (49), so the map is formed densely (scores, softmax, product).
        """
        Bw, C, wh, ww = x.shape
        n = wh * ww
        q, k = self.qk(x).chunk(2, dim=1)
        q = self.q_dw(q).permute(0, 2, 3, 1).reshape(Bw, n, -1)  # [Bw, N, C/4]
        k = k.permute(0, 2, 3, 1).reshape(Bw, n, -1)  # [Bw, N, C/4]
        v = self._values(x).permute(0, 2, 3, 1).reshape(Bw, n, C)  # [Bw, N, C]
        scores = torch.baddbmm(self.attention_bias().unsqueeze(0), q, k.transpose(1, 2), alpha=self.scale)
        attn = torch.softmax(scores, dim=-1)  # [Bw, N, N], the one map
        return torch.bmm(attn, v).view(Bw, wh, ww, C).permute(0, 3, 1, 2)

    def _attend_nchw(self, x: Tensor) -> Tensor:
        """The same as `_attend` on NCHW windows, written channel-major: O = V A^T, whose transposes
        an exported graph folds into its matrix products (the form used while tracing; in an ONNX
        graph every permute is a Transpose node)."""
        Bw, C, wh, ww = x.shape
        v = self._values(x).flatten(2)  # [Bw, C, N]
        return torch.matmul(v, self._map_nchw(x).transpose(1, 2)).view(Bw, C, wh, ww)

    def _map_nchw(self, x: Tensor) -> Tensor:
        """NCHW windows [Bw, C, ws, ws] -> their maps softmax(s Q^T K + bias): [Bw, N, N]."""
        q, k = self.qk(x).chunk(2, dim=1)
        q, k = self.q_dw(q).flatten(2), k.flatten(2)  # [Bw, C/4, N]
        return torch.softmax(torch.matmul(q.transpose(1, 2), k) * self.scale + self.attention_bias(), dim=-1)

    def attention_map(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> the mixer's maps [B * nH * nW, N, N], one per window (row-major,
        images one after another; zero-padded windows as in `forward`), shared by every head."""
        return self._map_nchw(window_partition(x, self.window_size, channels_last=False)[0])

    def _values(self, x: Tensor) -> Tensor:
        """Every head's depthwise value conv, as one conv: [Bw, C, ws, ws] -> [Bw, C, ws, ws]."""
        weight = self.v_dw.weight if self.v_mask is None else self.v_dw.weight * self.v_mask
        return F.conv2d(x, weight, self.v_dw.bias, padding=self.v_dw.padding, groups=x.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        ws = self.window_size
        # Eager runs token-major; an exported or scripted graph is cheaper channel-major.
        nchw = True
        if not torch.jit.is_scripting():
            nchw = is_exporting()
        if H == ws and W == ws:
            out = self._attend_nchw(x) if nchw else self._attend(x.contiguous(memory_format=torch.channels_last))
        else:
            windows, nH, nW = window_partition(x, ws, channels_last=not nchw)
            out = self._attend_nchw(windows) if nchw else self._attend(windows)
            out = window_reverse(out, nH, nW, H, W, channels_last=not nchw)
        # ReLU and the 1x1 projection are pointwise, so they run once on the merged map (the same
        # result as per window; in training, BatchNorm statistics skip the zero padding), and read
        # its memory as it is. The residual add after the mixer returns NCHW.
        return self.proj(self.act(out))

    @torch.no_grad()
    def fuse(self) -> "ReuseAttention2d":
        """Deployment form, in place: every ConvBN folded into its conv (eval statistics), the value
        kernels masked once, the [N, N] bias expanded once and, when the query kernel is 1 x 1, the
        query's depthwise scale folded into the Q rows of the [Q; K] conv. Returns self; a second
        call changes nothing."""
        if self.fused_bias is not None:
            return self
        self.qk, self.q_dw, self.proj = self.qk.fuse(), self.q_dw.fuse(), self.proj.fuse()
        self.v_dw.weight.mul_(self.v_mask)
        self.v_mask = None
        self.fused_bias = self.attention_bias().detach().clone()
        if self.q_dw.kernel_size == (1, 1):
            c4 = self.dim // 4
            gain, shift = self.q_dw.weight.view(c4), self.q_dw.bias
            self.qk.weight[:c4].mul_(gain.view(c4, 1, 1, 1))
            self.qk.bias[:c4].mul_(gain).add_(shift)
            self.q_dw = nn.Identity()
        return self
