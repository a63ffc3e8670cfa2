"""Attention layer: timm-equivalent MHA, Reuse / grouped reuse against the literal reference, map out / in."""

import pytest
import torch
from timm.layers import Attention as TimmAttention
from torch import nn

from attnreuse.layers import Attention
from attnreuse.ops import reference


def _tokens(B=2, N=7, C=32):
    return torch.randn(B, N, C)


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_mha_equals_timm(qkv_bias, qk_norm):
    timm_attn = TimmAttention(32, num_heads=4, qkv_bias=qkv_bias, qk_norm=qk_norm, norm_layer=nn.LayerNorm)
    ours = Attention(32, num_heads=4, qkv_bias=qkv_bias, qk_norm=qk_norm, norm_layer=nn.LayerNorm)
    if qk_norm:  # give the norms non-trivial affine parameters
        for p in timm_attn.q_norm.parameters():
            nn.init.normal_(p)
        for p in timm_attn.k_norm.parameters():
            nn.init.normal_(p)
    ours.load_state_dict(timm_attn.state_dict())  # strict: same names, same shapes
    x = _tokens()
    torch.testing.assert_close(ours(x), timm_attn(x), rtol=1e-5, atol=1e-5)


def _reference_layer(layer: Attention, x: torch.Tensor) -> torch.Tensor:
    """The layer's maths written out in float64 with the literal reference op."""
    x = x.double()
    B, N, C = x.shape
    w = {k: v.double() for k, v in layer.state_dict().items()}
    qk = x @ w["qk.weight"].T + w["qk.bias"]
    q, k = qk.view(B, N, 2, layer.qk_heads, -1).permute(2, 0, 3, 1, 4)
    v = (x @ w["v.weight"].T + w["v.bias"]).view(B, N, layer.num_heads, -1).transpose(1, 2)
    out = reference.softmax_attention(q, k, v, scale=layer.scale)
    return out.transpose(1, 2).reshape(B, N, C) @ w["proj.weight"].T + w["proj.bias"]


@pytest.mark.parametrize("qk_heads,qk_dim", [(1, None), (1, 24), (2, None), (4, 16)])
def test_reuse_layouts_match_reference(qk_heads, qk_dim):
    layer = Attention(32, num_heads=4, qk_heads=qk_heads, qk_dim=qk_dim, qkv_bias=True)
    assert not layer.fused_qkv and hasattr(layer, "qk") and hasattr(layer, "v")
    expected_qk = qk_dim or qk_heads * 8
    assert layer.qk.weight.shape == (2 * expected_qk, 32)
    x = _tokens()
    torch.testing.assert_close(layer(x).double(), _reference_layer(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("qk_heads,qk_dim", [(1, None), (1, 24), (2, None), (1, 32)])
def test_fused_reuse_layer_computes_what_it_did(qk_heads, qk_dim, qkv_bias):
    """fuse() (deployment) puts qk and v into one qkv Linear: same output, same map, same V for a
    given map; one Linear fewer; a second fuse() and an mha or V-only layer's fuse() change nothing."""
    layer = Attention(32, num_heads=4, qk_heads=qk_heads, qk_dim=qk_dim, qkv_bias=qkv_bias).eval()
    x = _tokens()
    want_out, want_map = layer(x, return_map=True)
    other_map = torch.softmax(torch.randn(2, qk_heads, 7, 7), -1)
    want_applied = layer(x, attn_map=other_map)
    assert layer.fuse() is layer and layer.fused_qkv and not hasattr(layer, "qk") and not hasattr(layer, "v")
    rows = 2 * (qk_dim or qk_heads * 8) + 32
    assert layer.qkv.weight.shape == (rows, 32) and (layer.qkv.bias is not None) == qkv_bias
    assert sum(isinstance(m, nn.Linear) for m in layer.modules()) == 2 and "fused into qkv" in repr(layer)
    out, attn = layer(x, return_map=True)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn, want_map, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x, attn_map=other_map), want_applied, rtol=1e-5, atol=1e-5)
    weight = layer.qkv.weight
    assert layer.fuse().qkv.weight is weight
    for unchanged in (Attention(32, num_heads=4), Attention(32, num_heads=4, v_only=True)):
        names = sorted(unchanged.state_dict())
        assert sorted(unchanged.fuse().state_dict()) == names


def test_deployed_reuse_vit_keeps_its_logits():
    """deploy_model (timm's re-parameterisation) fuses every qk + v layer of a plan ViT."""
    import timm

    import attnreuse  # noqa: F401 - registers the models
    from attnreuse.deploy import deploy_model

    model = timm.create_model("vit_attnreuse_pico_patch4_32", attn_plan=["mha", "reuse", "share", "reuse", "mha", "reuse"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        deployed = deploy_model(model)
        got = deployed(x)
    kinds = [type(b.attn).__name__ + str(getattr(b.attn, "fused_qkv", None)) for b in deployed.blocks]
    assert kinds == ["AttentionTrue", "AttentionTrue", "AttentionFalse", "AttentionTrue", "AttentionTrue", "AttentionTrue"] and not any(hasattr(b.attn, "qk") for b in deployed.blocks)
    assert hasattr(model.blocks[1].attn, "qk")  # deploy_model worked on a copy
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_reuse_with_all_heads_is_mha():
    mha = Attention(32, num_heads=4, qkv_bias=True)
    same = Attention(32, num_heads=4, qk_heads=4, qk_dim=32, qkv_bias=True)
    assert same.fused_qkv
    same.load_state_dict(mha.state_dict())
    x = _tokens()
    torch.testing.assert_close(same(x), mha(x))


@pytest.mark.parametrize("qk_heads", [1, 2, 4])
def test_map_round_trip(qk_heads):
    """A layer's returned map fed back in reproduces its output; a V-only layer applies it."""
    layer = Attention(32, num_heads=4, qk_heads=qk_heads, qkv_bias=True).eval()
    x = _tokens()
    out, attn = layer(x, return_map=True)
    assert attn.shape == (2, qk_heads, 7, 7)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, qk_heads, 7))
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x, attn_map=attn), out, rtol=1e-5, atol=1e-5)

    v_only = Attention(32, num_heads=4, v_only=True, qkv_bias=True)
    assert {n for n, _ in v_only.named_parameters()} == {"v.weight", "v.bias", "proj.weight", "proj.bias"}
    y = v_only(x, attn_map=attn)
    v = v_only.v(x).view(2, 7, 4, 8).transpose(1, 2)
    expect = v_only.proj(reference.apply_map(attn, v).transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-5)


def test_map_in_projects_v_only():
    """With a map given, q/k get no gradient: only V and the output projection are used."""
    layer = Attention(32, num_heads=4, qkv_bias=True)
    attn = torch.softmax(torch.randn(2, 1, 7, 7), -1)
    layer(_tokens(), attn_map=attn).sum().backward()
    g = layer.qkv.weight.grad
    assert g[:64].abs().max() == 0 and g[64:].abs().max() > 0


def test_attention_dropout_path():
    """Training with attn_drop > 0 drops map entries (seeded, so repeatable); eval does not."""
    layer = Attention(32, num_heads=4, attn_drop=0.5).train()
    x = _tokens()
    torch.manual_seed(1)
    a = layer(x)
    torch.manual_seed(1)
    torch.testing.assert_close(layer(x), a)
    layer.eval()
    b = layer(x)
    assert not torch.allclose(a, b)
    plain = Attention(32, num_heads=4).eval()
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(b, plain(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=30, num_heads=4), "divisible by num_heads"),
        (dict(dim=32, num_heads=4, qk_heads=3), "divisible by qk_heads"),
        (dict(dim=32, num_heads=4, qk_heads=2, qk_dim=15), "divisible by qk_heads"),
        (dict(dim=32, num_heads=0), "num_heads must be a positive int"),
        (dict(dim=32, num_heads=4, qk_norm=True), "needs a norm_layer"),
        (dict(dim=32, num_heads=4, attn_drop=1.5), "attn_drop"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Attention(**kwargs)


def test_bad_inputs():
    layer = Attention(32, num_heads=4)
    with pytest.raises(ValueError, match=r"C=32"):
        layer(torch.randn(2, 7, 16))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 7, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="Hv a multiple of 3"):
        layer(_tokens(), attn_map=torch.softmax(torch.randn(2, 3, 7, 7), -1))
    with pytest.raises(ValueError, match="v_only=True"):
        Attention(32, num_heads=4, v_only=True)(_tokens())
