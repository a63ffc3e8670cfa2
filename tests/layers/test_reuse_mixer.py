"""ReuseAttention2d against a literal per-window, per-head reading of NOTES.md section 1."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnreuse.layers.reuse_mixer as reuse_mixer
from attnreuse.layers import ReuseAttention2d, window_partition, window_reverse


def _bn(x, bn):
    """Eval-mode BatchNorm over dim 0 of x: [C, ...]."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def literal_mixer(m: ReuseAttention2d, x: torch.Tensor) -> torch.Tensor:
    """x: [B, C, H, W] -> [B, C, H, W], one window and one head at a time (eval-mode BN)."""
    B, C, H, W = x.shape
    ws, h = m.window_size, m.num_heads
    d, c4 = C // h, C // 4
    pH, pW = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    xp = torch.zeros(B, C, pH, pW, dtype=x.dtype)
    xp[:, :, :H, :W] = x
    out = torch.zeros_like(xp)
    n = ws * ws
    bias = torch.empty(n, n, dtype=x.dtype)
    for a in range(n):
        for b in range(n):
            dy, dx = abs(a // ws - b // ws), abs(a % ws - b % ws)
            bias[a, b] = m.attention_biases[0, dy * ws + dx]
    k_max = m.v_dw.kernel_size[0]
    for bi in range(B):
        for i0 in range(0, pH, ws):
            for j0 in range(0, pW, ws):
                xw = xp[bi, :, i0:i0 + ws, j0:j0 + ws]  # [C, ws, ws]
                qk = _bn(torch.einsum("oc,cyx->oyx", m.qk.conv.weight[:, :, 0, 0], xw), m.qk.bn)
                q, k = qk[:c4], qk[c4:]
                k0 = m.q_dw.conv.kernel_size[0]
                q = F.conv2d(q[None], m.q_dw.conv.weight, padding=k0 // 2, groups=c4)[0]
                q = _bn(q, m.q_dw.bn).reshape(c4, n)
                k = k.reshape(c4, n)
                A = torch.softmax(q.T @ k / math.sqrt(m.key_dim) + bias, dim=-1)  # [N, N]
                heads = []
                for i, ki in enumerate(m.kernels):
                    lo = (k_max - ki) // 2
                    w_i = m.v_dw.weight[i * d:(i + 1) * d, :, lo:lo + ki, lo:lo + ki]
                    v_i = F.conv2d(xw[None, i * d:(i + 1) * d], w_i, m.v_dw.bias[i * d:(i + 1) * d],
                                   padding=ki // 2, groups=d)[0].reshape(d, n)
                    heads.append(v_i @ A.T)  # O_i = V_i A^T, the same A for every head
                o = torch.relu(torch.cat(heads)).reshape(C, ws, ws)
                y = _bn(torch.einsum("oc,cyx->oyx", m.proj.conv.weight[:, :, 0, 0], o), m.proj.bn)
                out[bi, :, i0:i0 + ws, j0:j0 + ws] = y
    return out[:, :, :H, :W]


def _randomise(m: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.data = torch.rand(c, generator=g) + 0.5
            mod.bias.data = torch.randn(c, generator=g) * 0.1
            mod.running_mean = torch.randn(c, generator=g) * 0.1
            mod.running_var = torch.rand(c, generator=g) + 0.5
    m.attention_biases.data = torch.randn(m.attention_biases.shape, generator=g)


def _mixer(dim=16, heads=4, ws=3, kernels=(1, 3, 5, 7)):
    m = ReuseAttention2d(dim, heads, window_size=ws, kernels=kernels)
    _randomise(m)
    return m.double().eval()


@pytest.mark.parametrize("size", [(3, 3), (6, 6), (4, 5)])  # one window, 2x2 windows, padded windows
def test_matches_literal_reference(size):
    m = _mixer()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), literal_mixer(m, x))


@pytest.mark.parametrize("size", [(3, 3), (6, 6), (4, 5)])
def test_traced_channel_major_form_matches_literal_reference(size, monkeypatch):
    """While tracing (ONNX export) the mixer runs its NCHW form; it is the same function."""
    monkeypatch.setattr(reuse_mixer, "is_exporting", lambda: True)
    m = _mixer()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), literal_mixer(m, x))


def test_three_heads_and_query_kernel_three():
    m = _mixer(dim=12, heads=3, ws=2, kernels=(3, 5, 1))
    x = torch.randn(1, 12, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), literal_mixer(m, x))


def test_backward_matches_literal_reference():
    m = _mixer()
    x = torch.randn(1, 16, 4, 5, dtype=torch.float64, requires_grad=True)
    params = (x, m.attention_biases, m.v_dw.weight, m.qk.conv.weight)
    names = ("dx", "dbias_table", "dv_weight", "dqk_weight")
    grads = torch.autograd.grad(m(x).sin().sum(), params)
    refs = torch.autograd.grad(literal_mixer(m, x).sin().sum(), params)
    for name, g, r in zip(names, grads, refs):
        torch.testing.assert_close(g, r, msg=name)
    outside = m.v_mask == 0
    assert grads[2][outside].abs().max() == 0  # value kernels stay inside each head's k_i x k_i


def test_forms_one_map_per_window_for_all_heads(monkeypatch):
    calls, original = [], torch.softmax

    def spy(scores, dim):
        calls.append(tuple(scores.shape))
        return original(scores, dim)

    monkeypatch.setattr(reuse_mixer.torch, "softmax", spy)
    m = _mixer().float()
    m(torch.randn(2, 16, 6, 6))
    assert calls == [(8, 9, 9)]  # 2 images x 4 windows, ONE 9 x 9 map each (not one per head)


def test_fuse_matches_and_folds_query_scale():
    m = _mixer().float()
    x = torch.randn(2, 16, 6, 5)
    before = m(x)
    m.fuse()
    assert isinstance(m.q_dw, nn.Identity) and isinstance(m.qk, nn.Conv2d)
    torch.testing.assert_close(m(x), before, rtol=1e-5, atol=1e-5)


def test_training_step_keeps_kernels_inside_their_support():
    m = ReuseAttention2d(16, 4, window_size=3).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        m(torch.randn(2, 16, 6, 6)).square().mean().backward()
        opt.step()
    assert m.v_dw.weight[m.v_mask == 0].abs().max() == 0


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("hw", [(7, 9), (6, 9)], ids=["padded", "whole-windows"])
def test_window_partition_layouts_agree(channels_last, hw):
    x = torch.randn(2, 5, *hw)
    w, nH, nW = window_partition(x, 3, channels_last=channels_last)
    ref, _, _ = window_partition(x, 3, channels_last=not channels_last)
    assert torch.equal(w, ref) and w.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(window_reverse(w, nH, nW, *hw, channels_last=channels_last), x)


def test_window_partition_round_trip():
    x = torch.randn(2, 3, 5, 8)
    windows, nH, nW = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 3, 3, 3) and (nH, nW) == (2, 3)
    torch.testing.assert_close(windows[1], x[0, :, 0:3, 3:6])
    torch.testing.assert_close(window_reverse(windows, nH, nW, 5, 8), x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=18, num_heads=3), "divisible by 4"),
        (dict(dim=16, num_heads=3), "num_heads=3"),
        (dict(dim=16, num_heads=4, kernels=(1, 3, 5)), "at least num_heads=4"),
        (dict(dim=16, num_heads=2, kernels=(1, 4)), "odd positive"),
        (dict(dim=16, num_heads=2, window_size=0), "window_size"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReuseAttention2d(**kwargs)
