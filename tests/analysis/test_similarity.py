import math

import pytest
import timm
import torch

import attnreuse  # noqa: F401 - registers the attnreuse models
from attnreuse.capture import capture_attention
from attnreuse.analysis.similarity import head_cosine, layer_map_cosine, layer_output_cka, linear_cka
from attnreuse.ops import attention_map

VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=10)


def test_head_cosine_of_identical_and_disjoint_maps():
    a = torch.zeros(2, 3, 4, 4)
    a[:, 0] = torch.eye(4)
    a[:, 1] = torch.eye(4)
    a[:, 2] = torch.eye(4).roll(1, dims=1)
    cos = head_cosine(a)
    torch.testing.assert_close(cos, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"maps must be \[B, H, N, M\], got shape \(4, 4\)"):
        head_cosine(torch.eye(4))


def test_linear_cka_is_invariant_to_rotation_and_scale_but_not_to_mixing():
    x = torch.randn(200, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert abs(linear_cka(x, 3.0 * x @ q) - 1.0) < 1e-9
    assert linear_cka(x, torch.randn(200, 8, dtype=torch.float64)) < 0.2
    with pytest.raises(ValueError, match="one S"):
        linear_cka(x, x[:10])


def test_capture_on_timm_vit_matches_a_manual_map():
    model = timm.create_model("vit_tiny_patch16_224", **VIT).eval()
    x = torch.randn(2, 3, 16, 16)
    caps = capture_attention(model, [x[:1], x[1:]])
    assert [c.kind for c in caps] == ["mha"] * 3
    assert caps[0].maps.shape == (2, 2, 17, 17) and caps[0].output.shape == (2, 17, 32)
    blk = model.blocks[0]
    t = blk.norm1(model.norm_pre(model._pos_embed(model.patch_embed(x))))
    q, k, _ = blk.attn.qkv(t).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(caps[0].maps, attention_map(q, k, scale=blk.attn.scale))
    torch.testing.assert_close(caps[0].output, blk.attn(t))
    m = layer_map_cosine(caps)
    assert m.shape == (3, 3) and torch.allclose(m.diagonal(), torch.ones(3))


def test_capture_on_attnreuse_plan_handles_reuse_share_skip_taylor():
    model = timm.create_model(
        "vit_attnreuse_pico_patch4_32", **{**VIT, "depth": 5}, attn_plan=["mha", "reuse", "share", "skip", "taylor"]
    ).eval()
    caps = capture_attention(model, [torch.randn(2, 3, 16, 16)])
    assert [c.kind for c in caps] == ["mha", "reuse", "share", "skip", "taylor"]
    assert caps[1].maps.shape == (2, 1, 17, 17)
    assert caps[2].maps is caps[1].maps  # the shared layer applies the reuse layer's map
    assert caps[3].maps is None and caps[4].maps is None
    assert all(c.output.shape == (2, 17, 32) for c in caps)
    m, cka = layer_map_cosine(caps), layer_output_cka(caps)
    assert math.isnan(m[3, 0]) and not math.isnan(m[0, 1]) and abs(m[1, 2] - 1.0) < 1e-6
    assert not torch.isnan(cka).any() and torch.allclose(cka.diagonal(), torch.ones(5))


def test_capture_rejects_non_vit():
    with pytest.raises(TypeError, match="no `blocks` list"):
        capture_attention(torch.nn.Linear(3, 3), [torch.randn(1, 3)])
