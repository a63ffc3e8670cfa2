"""Every registered attnreuse model honours the timm contract at a small size: forward and backward,
output shapes, reset_classifier, pre-logits, torch.export, eval determinism, pretrained_cfg (one model
per family and plan: tests/models/zoo.py)."""

import pytest
import timm
import torch

import attnreuse
from attnreuse.models import list_models
from zoo import HEAVY, NAMES

# Small-size overrides per model family (keyed by the registering module); 2 images of `size` px.
SMALL = {
    "attnreuse.models.vit": (dict(img_size=32, depth=4), 32),
    "attnreuse.models.uniform": (dict(img_size=64), 64),
}


def _small(name):
    module = timm.models.model_entrypoint(name).__module__
    kwargs, size = SMALL.get(module, ({}, None))
    model = timm.create_model(name, **kwargs)
    size = size or model.pretrained_cfg["input_size"][-1]
    return model, torch.randn(2, model.pretrained_cfg["input_size"][0], size, size)


def test_list_models_names_every_attnreuse_model():
    assert NAMES == sorted(NAMES)
    required = {
        "vit_skipat_tiny_patch16_224",
        "vit_skipat_small_patch16_224",
        "vit_skipat_base_patch16_224",
        "deit_taylor_tiny_patch16_224",
        "deit_taylor_small_patch16_224",
        "vit_reuse_tiny_patch16_224",
        "vit_reuse_small_patch16_224",
        "vit_mapshare_small_patch16_224",
        "vit_attnreuse_tiny_patch16_224",
        "vit_attnreuse_small_patch16_224",
        "vit_attnreuse_pico_patch4_32",
    }
    assert required <= set(NAMES)
    assert "vit_small_patch16_224" not in NAMES and "efficientvit_m0" not in NAMES
    assert attnreuse.models.list_models is list_models


@pytest.mark.parametrize("name", HEAVY)
def test_timm_contract(name):
    model, x = _small(name)
    cfg = model.pretrained_cfg
    for key in ("mean", "std", "input_size", "crop_pct", "num_classes", "classifier", "first_conv"):
        assert key in cfg, f"{name}: pretrained_cfg lacks {key}"
    assert model.feature_info and isinstance(model.group_matcher(), dict)
    model.set_grad_checkpointing(False)

    model.train()
    out = model(x)
    assert out.shape == (2, model.num_classes)
    out.float().pow(2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name}: parameters without a gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (2, model.num_features)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.num_classes == 7
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)

    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)
