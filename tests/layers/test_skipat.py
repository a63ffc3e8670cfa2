"""SkipAt's Phi: shapes, the exact composition NOTES.md section 3 gives, and the ECA maths."""

import pytest
import torch
import torch.nn.functional as F

from attnreuse.layers import EfficientChannelAttention, SkipAtPhi


def test_eca_maths():
    eca = EfficientChannelAttention(3)
    x = torch.randn(2, 6, 5)
    w = eca.conv.weight.view(3)
    m = x.mean(dim=1)  # [B, C]
    padded = F.pad(m, (1, 1))
    z = w[0] * padded[:, :-2] + w[1] * padded[:, 1:-1] + w[2] * padded[:, 2:]
    torch.testing.assert_close(eca(x), x * torch.sigmoid(z)[:, None, :])
    assert eca.conv.bias is None


def test_phi_structure_and_maths():
    phi = SkipAtPhi(8)
    assert phi.fc1.weight.shape == (16, 8) and phi.fc2.weight.shape == (8, 16)
    assert phi.dwconv.weight.shape == (16, 1, 5, 5) and phi.dwconv.groups == 16
    assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)) for m in phi.modules())
    x = torch.randn(2, 12, 8)
    out = phi(x, grid=(3, 4))
    assert out.shape == x.shape
    h = F.gelu(phi.fc1(x)).transpose(1, 2).reshape(2, 16, 3, 4)
    h = F.gelu(F.conv2d(h, phi.dwconv.weight, phi.dwconv.bias, padding=2, groups=16))
    h = phi.fc2(h.flatten(2).transpose(1, 2))
    torch.testing.assert_close(out, phi.eca(h))


def test_phi_square_grid_default_and_errors():
    phi = SkipAtPhi(8)
    assert phi(torch.randn(1, 9, 8)).shape == (1, 9, 8)
    with pytest.raises(ValueError, match="not a square grid"):
        phi(torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match="has 12 cells but x has 9 tokens"):
        phi(torch.randn(1, 9, 8), grid=(3, 4))
    with pytest.raises(ValueError, match="C=8"):
        phi(torch.randn(1, 9, 4))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SkipAtPhi(8, kernel_size=4)
