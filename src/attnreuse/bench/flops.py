"""Parameter and multiply-accumulate counts, from PyTorch's own FLOP counter (not a hand count).

`torch.utils.flop_counter.FlopCounterMode` counts matmuls, convolutions and attention kernels
(2 flops per multiply-accumulate); element-wise work (softmax, norms, activations) is not counted,
as in fvcore and the papers' MAC figures. Its table lacks the CPU flash-attention kernel that
`F.scaled_dot_product_attention` runs on CPU (timm's fused attention), so that kernel is added here
with PyTorch's own SDPA formula; without it a timm ViT would be counted without its attention.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["count_macs", "count_params"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (before any deployment folding)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of one eval-mode forward of `x` [B, C, H, W], divided by B (per image)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops() // 2 // x.shape[0])
