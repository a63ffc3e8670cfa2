"""Random weights that exercise every branch, for benchmarking models nobody has trained.

A freshly created network that zero-initialises the BatchNorm gain closing each residual branch
(as several of timm's and attnreuse's conv networks do) has logits of ~1e-4, and an ONNX parity
check against them proves nothing.
`randomize_batchnorms` gives every BatchNorm a gain in [0.5, 1.5), a small shift and random running
statistics (eval mode folds these into the convs), so every branch reaches the logits. Latency is
unchanged: the deployed kernels are dense.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_batchnorms"]


@torch.no_grad()
def randomize_batchnorms(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Every BatchNorm of `model` (in place, reproducibly from `seed`): weight U[0.5, 1.5), bias
    N(0, 0.2^2), running mean N(0, 0.2^2), running variance U[0.5, 1.5). Returns `model`."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            n = m.num_features
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model
