"""The plan-driven ViT: equal to timm's ViT under the "mha" plan, plan semantics, loading and errors."""

import pytest
import timm
import torch
from safetensors.torch import save_file

import attnreuse  # noqa: F401  (registers the models)
from attnreuse.models.vit import convert_state_dict, describe_plan, mapshare_plan, skipat_plan
from attnreuse.ops import reference

SMALL = dict(img_size=32, depth=4)


def _vit(name="vit_attnreuse_tiny_patch16_224", **kwargs):
    return timm.create_model(name, **{**SMALL, **kwargs}).eval()


def _images(B=2, size=32):
    return torch.randn(B, 3, size, size)


def _file(tmp_path, state_dict, name="w.safetensors"):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_mha_plan_equals_timm_vit_small_full_size(tmp_path):
    """The baseline is really the baseline: timm ViT-S/16 weights, 224x224, all 12 layers."""
    ref = timm.create_model("vit_small_patch16_224").eval()
    model = timm.create_model(
        "vit_attnreuse_small_patch16_224", attn_plan="mha", **_file(tmp_path, ref.state_dict())
    ).eval()
    assert model.load_report.complete and not model.load_report.dropped
    x = _images(1, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_mha_plan_equals_timm_deit_tiny_torch_file(tmp_path):
    ref = timm.create_model("deit_tiny_patch16_224", **SMALL).eval()
    model = _vit(**_file(tmp_path, {"model": ref.state_dict()}, "w.pth"))
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_reuse_with_all_heads_equals_mha():
    mha = _vit(attn_plan="mha")
    reuse = _vit(attn_plan="reuse:3")
    reuse.load_state_dict(mha.state_dict())  # strict: the same parameters
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(reuse(x), mha(x))


def test_share_group_of_one_equals_mha():
    assert mapshare_plan(4, group=1) == ["mha"] * 4
    mha = _vit(attn_plan="mha")
    ones = _vit(attn_plan=mapshare_plan(4, group=1))
    ones.load_state_dict(mha.state_dict())
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(ones(x), mha(x))


def _attn_inputs(model, x):
    """Record each block's attention input (norm1 output) and attention output."""
    seen = {}
    hooks = []
    for i, blk in enumerate(model.blocks):
        if hasattr(blk, "norm1"):
            hooks.append(blk.norm1.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("in", i), o)))
            hooks.append(blk.attn.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("out", i), o)))
        else:
            hooks.append(blk.phi.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("phi", i), o)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("source", ["mha", "reuse"])
def test_share_applies_the_closest_earlier_map(source):
    """share layers project V only and apply the map of the closest earlier mha/reuse layer,
    across a taylor layer in between."""
    model = _vit(attn_plan=[source, "share", "taylor", "share"])
    assert set(dict(model.blocks[1].attn.named_parameters())) == {"v.weight", "v.bias", "proj.weight", "proj.bias"}
    seen = _attn_inputs(model, _images())
    src = model.blocks[0].attn
    with torch.no_grad():
        q, k, _ = src._project_qkv(seen[("in", 0)])
        attn = reference.attention_map(q, k, scale=src.scale)
        for i in (1, 3):
            layer = model.blocks[i].attn
            v = layer.v(seen[("in", i)]).view(2, 5, 3, 64).transpose(1, 2)
            out = reference.apply_map(attn, v).transpose(1, 2).reshape(2, 5, 192)
            torch.testing.assert_close(seen[("out", i)], layer.proj(out), rtol=1e-5, atol=1e-5)


def test_skip_uses_phi_on_previous_attention_output():
    """SkipAt: patch tokens from Phi of the previous (real or approximated) attention output, the
    CLS token from the last computed layer; the MLP still runs."""
    model = _vit("vit_skipat_tiny_patch16_224")
    assert model.attn_plan == ("mha", "skip", "skip", "mha")
    assert not hasattr(model.blocks[1], "attn") and not hasattr(model.blocks[1], "norm1")
    seen = _attn_inputs(model, _images())
    with torch.no_grad():
        z0 = seen[("out", 0)]
        phi1 = model.blocks[1].phi(z0[:, 1:], (2, 2))
        phi2 = model.blocks[2].phi(phi1, (2, 2))
    torch.testing.assert_close(seen[("phi", 1)], phi1)
    torch.testing.assert_close(seen[("phi", 2)], phi2)


def test_skipat_default_plan_is_layers_3_to_8():
    assert skipat_plan(12) == ["mha"] * 3 + ["skip"] * 6 + ["mha"] * 3
    model = timm.create_model("vit_skipat_tiny_patch16_224", img_size=32)
    assert describe_plan(model) == "mha x3, skip x6, mha x3"
    assert timm.create_model("vit_mapshare_small_patch16_224", img_size=32).attn_plan == ("mha", "share") * 6


def test_skip_with_dynamic_img_size_uses_the_actual_grid():
    model = _vit("vit_skipat_tiny_patch16_224", dynamic_img_size=True)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 64)).shape == (1, 1000)


def test_grad_checkpointing_and_intermediates():
    model = _vit(attn_plan=["mha", "share", "skip", "reuse"]).train()
    x = _images()
    torch.manual_seed(0)
    a = model(x)
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    b = model(x)
    b.sum().backward()
    torch.testing.assert_close(a, b)
    assert model.blocks[2].phi.fc1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=[1, 3])
        torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape for t in inter] == [(2, 192, 2, 2)] * 2
    feats = timm.create_model("vit_skipat_tiny_patch16_224", features_only=True, out_indices=(1, 3), **SMALL)
    assert [f.shape for f in feats(x)] == [(2, 192, 2, 2)] * 2


def _skipat_checkpoint(n_phi=2):
    """A state dict in SkipAt's layout: timm 0.5.4 ViT keys, every block with attn, param_i Phi."""
    sd = dict(timm.create_model("vit_tiny_patch16_224", **SMALL).state_dict())
    for i in range(1, n_phi + 1):
        sd[f"param_{i}.linear1.0.weight"] = torch.randn(384, 192)
        sd[f"param_{i}.linear1.0.bias"] = torch.randn(384)
        sd[f"param_{i}.dwconv.0.weight"] = torch.randn(384, 1, 5, 5)
        sd[f"param_{i}.dwconv.0.bias"] = torch.randn(384)
        sd[f"param_{i}.linear2.0.weight"] = torch.randn(192, 384)
        sd[f"param_{i}.linear2.0.bias"] = torch.randn(192)
        sd[f"param_{i}.eca.conv.weight"] = torch.randn(1, 1, 3)
    return sd


def test_loads_skipat_checkpoint_strictly(tmp_path):
    sd = _skipat_checkpoint()
    model = _vit("vit_skipat_tiny_patch16_224", **_file(tmp_path, sd, "skipat.pth"))
    report = model.load_report
    assert report.complete
    assert "blocks.1.attn.qkv.weight" in report.dropped and "blocks.2.norm1.weight" in report.dropped
    torch.testing.assert_close(model.blocks[2].phi.fc1.weight, sd["param_2.linear1.0.weight"])
    torch.testing.assert_close(model.blocks[1].phi.eca.conv.weight, sd["param_1.eca.conv.weight"])
    torch.testing.assert_close(model.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])


def test_loads_vitality_checkpoint(tmp_path):
    sd = dict(timm.create_model("deit_tiny_patch16_224", **SMALL).state_dict())
    for i in range(4):
        sd[f"blocks.{i}.attn.quant.running_range"] = torch.ones(1, 1, 1)
    model = _vit("deit_taylor_tiny_patch16_224", taylor_center="features", **_file(tmp_path, sd))
    assert model.load_report.complete and len(model.load_report.dropped) == 4
    assert model.blocks[0].attn.center == "features"
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])


def test_share_and_reuse_conversion_keeps_v_rows():
    sd = timm.create_model("vit_tiny_patch16_224", **SMALL).state_dict()
    target = _vit(attn_plan=["mha", "share", "reuse", "share"]).state_dict()
    out, report = convert_state_dict(sd, ["mha", "share", "reuse", "share"], num_heads=3, target=target)
    torch.testing.assert_close(out["blocks.1.attn.v.weight"], sd["blocks.1.attn.qkv.weight"][384:])
    torch.testing.assert_close(out["blocks.2.attn.v.bias"], sd["blocks.2.attn.qkv.bias"][384:])
    assert ("blocks.1.attn.qkv.weight[v rows]", "blocks.1.attn.v.weight") in report.renamed
    assert "blocks.3.attn.qkv.weight[q, k rows]" in report.dropped
    assert report.new == ("blocks.2.attn.qk.bias", "blocks.2.attn.qk.weight")
    assert not report.unexpected and not report.mismatched and not report.complete


def test_strict_loading_refuses_partial_checkpoints(tmp_path):
    sd = timm.create_model("vit_tiny_patch16_224", **SMALL).state_dict()
    weights = _file(tmp_path, sd)
    with pytest.raises(ValueError, match=r"(?s)new \(not in the checkpoint.*blocks\.0\.attn\.qk\.weight.*pretrained_strict=False"):
        _vit(attn_plan="reuse", **weights)
    model = _vit(attn_plan="reuse", pretrained_strict=False, **weights)
    assert "blocks.0.attn.qk.weight" in model.load_report.new
    torch.testing.assert_close(model.blocks[0].attn.v.weight, sd["blocks.0.attn.qkv.weight"][384:])


def test_mismatched_checkpoint_raises(tmp_path):
    sd = timm.create_model("vit_small_patch16_224", **SMALL).state_dict()
    with pytest.raises(ValueError, match=r"shape mismatch.*blocks.0.attn.proj.bias \(384,\) vs model \(192,\)") as err:
        _vit(**_file(tmp_path, sd))
    assert "re-initialised" not in str(err.value)  # same class count: the head is a mismatch too
    _, report = convert_state_dict(sd, "mha", num_heads=6, target=_vit().state_dict())
    assert ("head.weight", (1000, 384), (1000, 192)) in report.mismatched and not report.reinitialised
    with pytest.raises(ValueError, match="attn_plan has 12 entries but the checkpoint has depth=4"):
        convert_state_dict(sd, ["mha"] * 12, num_heads=6)
    with pytest.raises(ValueError, match="not a ViT/DeiT state dict"):
        convert_state_dict({"weight": torch.zeros(1)}, "mha", num_heads=3)


def test_classifier_and_resolution_adaptation(tmp_path):
    """Another class count re-initialises the head; another resolution resamples pos_embed."""
    ref = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=4)
    model = _vit(num_classes=10, **_file(tmp_path, ref.state_dict()))
    assert model.load_report.reinitialised == ("head.bias", "head.weight") and model.load_report.complete
    assert model(_images()).shape == (2, 10)


def test_pretrained_without_a_file_is_an_error():
    with pytest.raises(ValueError, match="pretrained_cfg_overlay=dict\\(file=PATH\\)"):
        timm.create_model("vit_reuse_tiny_patch16_224", pretrained=True, **SMALL)


@pytest.mark.parametrize(
    "plan,match",
    [
        (["mha"] * 3, "has 3 entries but the model has depth=4"),
        (["share", "mha", "mha", "mha"], r"attn_plan\[0\]='share'"),
        (["skip", "mha", "mha", "mha"], r"attn_plan\[0\]='skip'"),
        (["taylor", "share", "mha", "mha"], r"attn_plan\[1\]='share' has no earlier layer"),
        ("flash", "not a known kind"),
        ("reuse:2", "divisor of num_heads=3"),
        ("mha:2", "only 'reuse' / 'kvpool' takes an argument"),
    ],
)
def test_bad_plans(plan, match):
    with pytest.raises(ValueError, match=match):
        _vit(attn_plan=plan)


def test_bad_plan_types_and_arguments():
    with pytest.raises(TypeError, match=r"attn_plan\[1\] must be a str"):
        _vit(attn_plan=["mha", 2, "mha", "mha"])
    with pytest.raises(TypeError, match="attn_plan must be a str or a sequence"):
        _vit(attn_plan=3)
    with pytest.raises(ValueError, match="img_size=\\(30, 30\\) must be a multiple of patch_size"):
        _vit(img_size=30)
    with pytest.raises(ValueError, match="block_fn is chosen by attn_plan"):
        _vit(block_fn=torch.nn.Identity)
    with pytest.raises(ValueError, match="reuse_qk_dim must be a positive int, got 0"):
        _vit(attn_plan="reuse", reuse_qk_dim=0)
    with pytest.raises(ValueError, match="patch_drop_rate"):
        _vit("vit_skipat_tiny_patch16_224", patch_drop_rate=0.1)


def test_bad_resolution_raises():
    model = _vit()
    with pytest.raises(ValueError, match="input 48x48 does not match the model's img_size \\(32, 32\\)"):
        model(_images(1, 48))
    with pytest.raises(ValueError, match=r"x must be images \[B, 3, H, W\]"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        _vit(dynamic_img_size=True)(torch.randn(1, 3, 40, 40))


def test_reuse_qk_dim_and_grouped_reuse():
    model = _vit("vit_attnreuse_small_patch16_224", attn_plan=["reuse", "reuse:2", "reuse:6", "share"], reuse_qk_dim=48)
    blocks = model.blocks
    assert blocks[0].attn.qk.weight.shape == (96, 384) and blocks[0].attn.qk_heads == 1
    assert blocks[1].attn.qk.weight.shape == (96, 384) and blocks[1].attn.qk_heads == 2
    assert blocks[2].attn.fused_qkv  # reuse:<num_heads> is multi-head attention
    assert model.attn_plan == ("reuse", "reuse:2", "reuse:6", "share")
    with torch.no_grad():
        assert model(_images()).shape == (2, 1000)


def test_own_checkpoints_round_trip(tmp_path):
    """A plan model's own state dict (qk + v, q/k norms, V-only and Phi layers) loads back strictly."""
    plan = ["reuse", "share", "skip", "taylor"]
    model = _vit(attn_plan=plan, qk_norm=True)
    loaded = _vit(attn_plan=plan, qk_norm=True, **_file(tmp_path, model.state_dict()))
    assert loaded.load_report.complete and not loaded.load_report.dropped
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
