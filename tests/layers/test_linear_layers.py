"""TaylorAttention (sparse branch in training only) and LinearAttention on top of the ops."""

import pytest
import torch

from attnreuse.layers import LinearAttention, TaylorAttention
from attnreuse.ops import reference


def _qkv(layer, x):
    B, N, C = x.shape
    return layer.qkv(x).view(B, N, 3, layer.num_heads, -1).permute(2, 0, 3, 1, 4)


def _merge(layer, out):
    B, H, N, d = out.shape
    return layer.proj(out.transpose(1, 2).reshape(B, N, H * d))


@pytest.mark.parametrize("center", ["tokens", "features", None])
def test_taylor_eval_is_linear_part_only(center):
    layer = TaylorAttention(16, num_heads=2, qkv_bias=True, center=center).eval()
    x = torch.randn(2, 5, 16)
    q, k, v = _qkv(layer, x)
    expect = _merge(layer, reference.taylor_attention(q.double(), k.double(), v.double(), center=center).float())
    torch.testing.assert_close(layer(x), expect, rtol=1e-5, atol=1e-5)


def test_taylor_training_adds_sparse_branch():
    layer = TaylorAttention(16, num_heads=2, sparse_threshold=0.05, sparse_mode="additive").train()
    x = torch.randn(2, 5, 16)
    q, k, v = _qkv(layer, x)
    linear = reference.taylor_attention(q, k, v)
    sparse = reference.sparse_attention(q, k, v, threshold=0.05, bits=4)
    torch.testing.assert_close(layer(x), _merge(layer, linear + sparse), rtol=1e-5, atol=1e-5)
    layer.use_sparse = False
    torch.testing.assert_close(layer(x), _merge(layer, linear), rtol=1e-5, atol=1e-5)


def test_taylor_residual_mode_adds_higher_order_terms():
    layer = TaylorAttention(16, num_heads=2, sparse_threshold=0.05, sparse_mode="residual").train()
    x = torch.randn(2, 5, 16)
    q, k, v = _qkv(layer, x)
    linear = reference.taylor_attention(q, k, v)
    residual = reference.taylor_residual_attention(q, k, v, threshold=0.05, bits=4)
    torch.testing.assert_close(layer(x), _merge(layer, linear + residual), rtol=1e-5, atol=1e-5)


def test_taylor_sparse_branch_anneals_to_the_eval_form():
    layer = TaylorAttention(16, num_heads=2, sparse_threshold=0.0, sparse_mode="additive", sparse_anneal=0.5).train()
    x = torch.randn(2, 5, 16)
    q, k, v = _qkv(layer, x)
    linear = reference.taylor_attention(q, k, v)
    sparse = reference.sparse_attention(q, k, v, threshold=0.0, bits=4)
    layer.set_progress(0.25)
    assert layer.sparse_weight == 0.5
    torch.testing.assert_close(layer(x), _merge(layer, linear + 0.5 * sparse), rtol=1e-5, atol=1e-5)
    layer.set_progress(0.6)
    assert layer.sparse_weight == 0.0
    torch.testing.assert_close(layer(x), layer.eval()(x), rtol=0, atol=0)
    held = TaylorAttention(16, num_heads=2, sparse_anneal=None)
    held.set_progress(0.9)
    assert held.sparse_weight == 1.0


def test_taylor_default_training_form_starts_at_the_deployed_form():
    """At initialisation (small q . k) softmax and its first-order expansion agree, so the default
    training form (sparse branch at full weight) must be the eval form up to the higher-order terms.
    The additive form is Taylor + a dense softmax (0.002 keeps every entry of a 65-token map): twice
    the eval output, halved while the branch anneals; that moving target stalled a digits seed
    (docs/taylor.md, "Stable training")."""
    torch.manual_seed(0)
    layer = TaylorAttention(64, num_heads=4)
    torch.nn.init.trunc_normal_(layer.qkv.weight, std=0.02)  # timm's ViT initialisation
    torch.nn.init.trunc_normal_(layer.proj.weight, std=0.02)
    torch.nn.init.zeros_(layer.proj.bias)
    x = torch.randn(4, 65, 64)
    deployed = layer.eval()(x)
    gap = (layer.train()(x) - deployed).norm() / deployed.norm()
    assert gap < 0.05, f"training form differs from the deployed form by {gap:.3f} (relative) at init"
    additive = TaylorAttention(64, num_heads=4, sparse_mode="additive")
    additive.load_state_dict(layer.state_dict())
    additive_gap = (additive.train()(x) - deployed).norm() / deployed.norm()
    assert additive_gap > 0.9  # the contrast the default avoids


def test_taylor_loads_timm_attention_weights():
    from timm.layers import Attention as TimmAttention

    TaylorAttention(16, num_heads=2, qkv_bias=True).load_state_dict(
        TimmAttention(16, num_heads=2, qkv_bias=True).state_dict()
    )


@pytest.mark.parametrize("feature_map", ["elu", "relu"])
def test_linear_attention(feature_map):
    layer = LinearAttention(16, num_heads=4, feature_map=feature_map)
    x = torch.randn(2, 5, 16)
    q, k, v = _qkv(layer, x)
    expect = _merge(layer, reference.linear_attention(q, k, v, feature_map=feature_map))
    torch.testing.assert_close(layer(x), expect, rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="center must be one of"):
        TaylorAttention(16, num_heads=2, center="keys")
    with pytest.raises(ValueError, match="sparse_threshold"):
        TaylorAttention(16, num_heads=2, sparse_threshold=2.0)
    with pytest.raises(ValueError, match="sparse_mode must be one of"):
        TaylorAttention(16, num_heads=2, sparse_mode="both")
    with pytest.raises(ValueError, match="sparse_anneal"):
        TaylorAttention(16, num_heads=2, sparse_anneal=0.0)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        LinearAttention(16, num_heads=2, feature_map="softplus")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        LinearAttention(15, num_heads=2)
