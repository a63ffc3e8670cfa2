"""SkipAt's parametric function Phi (Venkataramanan et al., "Skip-Attention", ICLR 2024).

A skipped layer's attention output is approximated from the previous layer's: Z_l ~ Phi(Z_{l-1}) on
the patch tokens (the model handles the CLS / prefix tokens). Phi, as NOTES.md section 3:
Linear(d -> 2d) + GELU -> depthwise Conv2d 5x5 on the token grid + GELU -> Linear(2d -> d) ->
efficient channel attention. No norm, no residual inside Phi.
"""

from __future__ import annotations

import math

import torch
from timm.models import register_notrace_module
from torch import Tensor, nn

from attnreuse.layers._checks import check_positive_int, check_tokens

__all__ = ["EfficientChannelAttention", "SkipAtPhi"]


class EfficientChannelAttention(nn.Module):
    """ECA on tokens x [B, N, C]: w = sigmoid(Conv1d_k(mean over tokens of x)) over channels; x * w.

    Parameter `conv`: Conv1d(1, 1, kernel_size, no bias), zero padded to keep C channels.
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the channel count, got {kernel_size}")
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.conv(x.mean(dim=1, keepdim=True))  # [B, 1, C]: channels are the conv's length axis
        return x * torch.sigmoid(w)


@register_notrace_module  # a leaf of torch.fx graphs: it reshapes tokens to the grid it is given
class SkipAtPhi(nn.Module):
    """Phi: patch tokens x [B, H*W, C] -> [B, H*W, C].

    Parameters: `fc1` Linear(C -> hidden), `dwconv` Conv2d(hidden, hidden, kernel_size, groups=hidden),
    `fc2` Linear(hidden -> C), `eca.conv`. hidden defaults to 2C. Tokens are row-major on the grid
    (timm's patch order); `grid=(H, W)` gives it, else N must be a perfect square.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        kernel_size: int = 5,
        eca_kernel_size: int = 3,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        hidden_dim = 2 * dim if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the grid size, got {kernel_size}")
        self.dim = dim
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act1 = act_layer()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=kernel_size // 2, groups=hidden_dim)
        self.act2 = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.eca = EfficientChannelAttention(eca_kernel_size)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        check_tokens(x, self.dim)
        B, N, _ = x.shape
        if grid is None:
            side = math.isqrt(N)
            if side * side != N:
                raise ValueError(f"SkipAtPhi needs grid=(H, W) when the {N} tokens are not a square grid")
            grid = (side, side)
        H, W = grid
        if H * W != N:
            raise ValueError(f"grid {tuple(grid)} has {H * W} cells but x has {N} tokens (shape {tuple(x.shape)})")
        h = self.act1(self.fc1(x))  # [B, N, hidden]
        # [B, hidden, H, W] as a channels-last view: CPU depthwise conv is ~10x faster on it than on a
        # channels-first copy, and its channels-last output flattens back to tokens without a copy.
        h = h.view(B, H, W, -1).permute(0, 3, 1, 2)
        h = self.act2(self.dwconv(h)).permute(0, 2, 3, 1).reshape(B, N, -1)  # [B, N, hidden]
        return self.eca(self.fc2(h))
