"""ConvBN / NormLinear folding, the 1x1-depthwise multiply path, PatchMerging, Residual."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnreuse.layers import ConvBN, ConvFFN, NormLinear, PatchMerging, Residual, fuse_modules


def _randomise_bn(module: nn.Module) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5


@pytest.mark.parametrize(
    "cfg",
    [
        dict(in_chs=6, out_chs=8, kernel_size=3, stride=2),
        dict(in_chs=8, out_chs=8, kernel_size=3, groups=8),
        dict(in_chs=8, out_chs=4, kernel_size=1),
        dict(in_chs=8, out_chs=8, kernel_size=1, groups=8),  # the per-channel-scale path
    ],
)
def test_convbn_fuse_matches(cfg):
    args = dict(cfg)
    m = ConvBN(args.pop("in_chs"), args.pop("out_chs"), args.pop("kernel_size"), **args)
    _randomise_bn(m)
    m.eval()
    x = torch.randn(2, m.conv.in_channels, 9, 7)
    fused = m.fuse()
    assert isinstance(fused, nn.Conv2d)
    torch.testing.assert_close(fused(x), m(x), rtol=1e-5, atol=1e-5)


def test_channel_scale_path_equals_depthwise_conv_forward_and_backward():
    m = ConvBN(8, 8, 1, groups=8)
    assert m.channel_scale
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    m = m.double()
    out = m(x)
    ref = m.bn(F.conv2d(x, m.conv.weight, groups=8))
    torch.testing.assert_close(out, ref)
    gx, gw = torch.autograd.grad(out.square().sum(), (x, m.conv.weight))
    rx, rw = torch.autograd.grad(ref.square().sum(), (x, m.conv.weight))
    torch.testing.assert_close(gx, rx, msg="dx")
    torch.testing.assert_close(gw, rw, msg="dweight")


def test_normlinear_fuse_matches():
    m = NormLinear(12, 5)
    _randomise_bn(m)
    m.eval()
    x = torch.randn(3, 12)
    torch.testing.assert_close(m.fuse()(x), m(x), rtol=1e-5, atol=1e-5)


def test_fuse_modules_replaces_nested_convbn():
    net = nn.Sequential(Residual(ConvBN(4, 4, 3, groups=4)), ConvFFN(4, 8), PatchMerging(4, 6))
    _randomise_bn(net)
    net.eval()
    x = torch.randn(1, 4, 7, 7)
    before = net(x)
    fuse_modules(net)
    assert not any(isinstance(m, (ConvBN, nn.BatchNorm2d)) for m in net.modules())
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


def test_patch_merging_halves_with_ceil():
    m = PatchMerging(8, 12)
    assert m(torch.randn(2, 8, 7, 6)).shape == (2, 12, 4, 3)
    assert m.se.fc1.out_channels == 8  # squeeze to 4 * dim / 4


def test_residual_adds_and_drops_per_sample():
    branch = nn.Conv2d(3, 3, 1)
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(Residual(branch)(x), x + branch(x))
    r = Residual(branch, drop_path=0.999).train()
    torch.manual_seed(0)
    out = r(x)
    kept = [not torch.allclose(out[i], x[i]) for i in range(4)]
    assert sum(kept) <= 1  # (nearly) every sample dropped to the identity
