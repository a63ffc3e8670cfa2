"""Parameter and multiply-accumulate counts, from PyTorch's own FLOP counter (not a hand count).

`torch.utils.flop_counter.FlopCounterMode` counts matmuls, convolutions and attention kernels
(2 flops per multiply-accumulate); element-wise work (softmax, norms, activations) is not counted,
as in fvcore and the papers' MAC figures. Its table lacks the CPU flash-attention kernel that
`F.scaled_dot_product_attention` runs on CPU (timm's fused attention), so that kernel is added here
with PyTorch's own SDPA formula; without it a timm ViT would be counted without its attention.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["count_macs", "count_params"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (before any deployment folding)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of one eval-mode forward of `x` [B, C, H, W], divided by B (per image)."""
    from attnreuse.measure import count_call_macs

    return count_call_macs(lambda: model(x)) // x.shape[0]
