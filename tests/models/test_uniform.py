"""UniForm models: every registered size, the timm contract, fuse(), loading the authors' checkpoints."""

import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import attnreuse  # noqa: F401  (registers the models)
from attnreuse.models.uniform import UNIFORM_CONFIGS, checkpoint_filter_fn

NAMES = ["uniform_xs", "uniform_s", "uniform_m2", "uniform_m", "uniform_m4", "uniform_l"]
WIDTHS = {"uniform_xs": "m0", "uniform_s": "m1", "uniform_m": "m3", "uniform_l": "m5"}


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) * 0.5 + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
        if hasattr(m, "attention_biases"):
            m.attention_biases.data = torch.randn(m.attention_biases.shape, generator=g)


def _small(name="uniform_xs", **kwargs):
    return timm.create_model(name, img_size=64, num_classes=10, **kwargs)


def test_every_uniform_name_is_registered():
    assert set(NAMES) <= set(attnreuse.models.list_models())


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model = _small(name).train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name, key", sorted(WIDTHS.items()))
def test_sizes_use_efficientvit_widths(name, key):
    model = timm.create_model(name, num_classes=0)
    ref = timm.create_model(f"efficientvit_{key}", num_classes=0)
    assert [f["num_chs"] for f in model.feature_info] == [f["num_chs"] for f in ref.feature_info]
    assert [len(s.blocks) for s in model.stages] == list(UNIFORM_CONFIGS[key]["depth"])


def test_fuse_keeps_output():
    model = _small()
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
        model.fuse()  # idempotent
        torch.testing.assert_close(model(x), after, rtol=0, atol=0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        _small().train().fuse()


@pytest.mark.parametrize("size", [(64, 64), (48, 96), (112, 112)])
def test_any_multiple_of_16(size):
    model = timm.create_model("uniform_xs", num_classes=0).eval()  # windows built for 224
    feats = model.forward_features(torch.randn(1, 3, *size))
    assert feats.shape == (1, 192, -(-size[0] // 64), -(-size[1] // 64))


@pytest.mark.parametrize("size", [(64, 72), (8, 8)])
def test_bad_resolution_raises(size):
    model = _small().eval()
    with pytest.raises(ValueError, match=rf"multiples of 16.*{size[0]}x{size[1]}"):
        model(torch.randn(1, 3, *size))


def test_bad_channels_and_img_size_raise():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        _small().eval()(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="img_size"):
        timm.create_model("uniform_xs", img_size=100)


def test_features_only_and_intermediates():
    net = timm.create_model("uniform_xs", img_size=64, features_only=True).eval()
    model = _small().eval()
    renamed = {re.sub(r"^(patch_embed|stages)\.", r"\1_", k): v for k, v in model.state_dict().items()}
    net.load_state_dict({k: v for k, v in renamed.items() if not k.startswith("head.")})
    x = torch.randn(2, 3, 64, 64)
    feats = net(x)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 4, 4), (2, 128, 2, 2), (2, 192, 1, 1)]
    assert net.feature_info.reduction() == [16, 32, 64]
    final, inter = model.forward_intermediates(x)
    for a, b in zip(inter, feats):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(final, model.forward_features(x))
    assert len(model.forward_intermediates(x, indices=1, intermediates_only=True)) == 1


def test_head_api():
    model = _small().eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (2, 192)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 192, 1, 1)  # unpooled features
    with pytest.raises(ValueError, match="pooled"):
        model.reset_classifier(5, "")


def test_grad_checkpointing_same_result():
    model = _small().train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    ref = model(x)
    ref.sum().backward()
    ref_grad = model.patch_embed.conv1.conv.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(model.patch_embed.conv1.conv.weight.grad, ref_grad)


def test_group_matcher_covers_every_parameter():
    from timm.models import group_parameters

    model = _small()
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    # stem, six blocks (m0 depth 1/2/3; a downsample joins its stage's first block, as timm's
    # EfficientViT), head
    assert len(groups) == 1 + 6 + 1


def test_eval_deterministic_and_pretrained_cfg():
    model = _small().eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["classifier"] == "head.linear"
    assert cfg["first_conv"] == "patch_embed.conv1.conv"


def test_pretrained_from_local_safetensors(tmp_path):
    src = _small()
    _randomise_bn(src)
    path = tmp_path / "uniform_xs.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = _small(pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), src.eval()(x))


# --- the authors' mmpretrain layout, written independently of the model's filter -------------------

# (our key pattern, the authors' key) for one layer; applied by _to_mmpretrain below.
OURS_TO_THEIRS = [
    (r"^stages\.(\d+)\.downsample\.dw0\.", r"stages.\1.downsample.res1.0."),
    (r"^stages\.(\d+)\.downsample\.ffn0\.", r"stages.\1.downsample.res1.1."),
    (r"^stages\.(\d+)\.downsample\.dw1\.", r"stages.\1.downsample.res2.0."),
    (r"^stages\.(\d+)\.downsample\.ffn1\.", r"stages.\1.downsample.res2.1."),
    (r"^stages\.(\d+)\.downsample\.merge\.se\.fc1\.", r"stages.\1.downsample.patchmerge.se.conv1.conv."),
    (r"^stages\.(\d+)\.downsample\.merge\.se\.fc2\.", r"stages.\1.downsample.patchmerge.se.conv2.conv."),
    (r"^stages\.(\d+)\.downsample\.merge\.", r"stages.\1.downsample.patchmerge."),
    (r"\.mixer\.m\.qk\.", ".mixer.m.attn.qkvs."),
    (r"\.mixer\.m\.q_dw\.", ".mixer.m.attn.dws."),
    (r"\.mixer\.m\.proj\.", ".mixer.m.attn.proj.1."),
    (r"\.mixer\.m\.attention_biases$", ".mixer.m.attn.attention_biases"),
]


def _to_mmpretrain(model) -> dict:
    """Our state dict rewritten as mmpretrain's MixViT + MixViTClsHead would save it."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            out[key] = value.clone()
            continue
        mixer = re.match(r"^(.*\.mixer\.m)\.v_dw\.(weight|bias)$", key)
        if mixer:
            mod = model.get_submodule(mixer.group(1))
            d, k_max = mod.dim // mod.num_heads, mod.v_dw.kernel_size[0]
            for i, k in enumerate(mod.kernels):
                part = value[i * d:(i + 1) * d]
                if mixer.group(2) == "weight":
                    lo = (k_max - k) // 2
                    part = part[:, :, lo:lo + k, lo:lo + k]
                out[f"backbone.{mixer.group(1)}.attn.mix.{i}.{mixer.group(2)}"] = part.clone()
            continue
        new = key
        for pattern, repl in OURS_TO_THEIRS:
            new = re.sub(pattern, repl, new)
        if key.endswith("attention_biases"):
            heads = model.get_submodule(key.rsplit(".", 1)[0]).num_heads
            value = torch.cat([value, torch.randn(heads - 1, value.shape[1])])  # rows 1.. are unused
            out[f"backbone.{new}".replace("attention_biases", "attention_bias_idxs")] = torch.zeros(1)
        out[f"backbone.{new}"] = value.clone()
    return out


def test_loads_authors_checkpoint_layout(tmp_path):
    src = _small()
    _randomise_bn(src)
    theirs = _to_mmpretrain(src)
    assert "backbone.stages.1.downsample.patchmerge.se.conv1.conv.weight" in theirs
    assert "backbone.stages.0.blocks.0.mixer.m.attn.mix.3.weight" in theirs
    path = tmp_path / "mixvit_m0.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": theirs}, path)
    loaded = _small(pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), src.eval()(x))


def test_authors_checkpoint_with_other_kernels_is_refused():
    src = _small()
    theirs = _to_mmpretrain(src)
    theirs["backbone.stages.0.blocks.0.mixer.m.attn.mix.1.weight"] = torch.zeros(16, 1, 5, 5)
    with pytest.raises(ValueError, match="head 1 has a 5x5 kernel"):
        checkpoint_filter_fn(theirs, src)


def test_bias_table_resized_for_other_windows():
    small = _small()  # stage-3 windows 1x1 at img_size 64
    big = timm.create_model("uniform_xs", num_classes=10)  # 4x4 at 224
    sd = checkpoint_filter_fn(small.state_dict(), big)
    assert sd["stages.2.blocks.0.mixer.m.attention_biases"].shape == (1, 16)
    big.load_state_dict(sd)
