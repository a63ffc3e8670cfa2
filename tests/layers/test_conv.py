"""ConvBN / NormLinear folding, the 1x1-depthwise multiply path, PatchMerging, Residual."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from timm.models.efficientvit_msra import ConvNorm as TimmConvNorm
from timm.models.efficientvit_msra import NormLinear as TimmNormLinear
from timm.utils.model import reparameterize_model

from attnreuse.layers import ConvBN, ConvFFN, NormLinear, PatchMerging, Residual


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


def test_reparameterize_model_folds_nested_convbn():
    net = nn.Sequential(Residual(ConvBN(4, 4, 3, groups=4)), ConvFFN(4, 8), PatchMerging(4, 6))
    _randomise_bn(net)
    net.eval()
    x = torch.randn(1, 4, 7, 7)
    before = net(x)
    reparameterize_model(net, inplace=True)
    assert not any(isinstance(m, (ConvBN, nn.BatchNorm2d)) for m in net.modules())
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [dict(kernel_size=3, stride=2, groups=1), dict(kernel_size=1, stride=1, groups=8)])
def test_convbn_and_normlinear_match_timms_with_the_same_weights(cfg):
    """ConvBN / NormLinear are timm efficientvit_msra's ConvNorm / NormLinear (same names, same maths;
    layers/conv.py says why they are not subclasses)."""
    ours = ConvBN(8, 8, cfg["kernel_size"], stride=cfg["stride"], groups=cfg["groups"])
    theirs = TimmConvNorm(8, 8, cfg["kernel_size"], cfg["stride"], cfg["kernel_size"] // 2, groups=cfg["groups"])
    _randomise_bn(ours)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 9, 7)
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.fuse()(x), theirs.fuse()(x), rtol=1e-5, atol=1e-5)
    lin, timm_lin = NormLinear(12, 5), TimmNormLinear(12, 5)
    _randomise_bn(lin)
    timm_lin.load_state_dict(lin.state_dict())
    lin.eval(), timm_lin.eval()
    y = torch.randn(3, 12)
    torch.testing.assert_close(lin(y), timm_lin(y), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lin.fuse()(y), timm_lin.fuse()(y), rtol=1e-5, atol=1e-5)


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
