"""The checks of timm's own `tests/test_models.py` that its models of the same kind pass, run on every
attnreuse model at a small size (timm's test file is not installed with timm): torch.fx tracing
(forward, bit-exact, and backward, as timm's feature extraction uses it), TorchScript (scripted and
fx-then-scripted), and default cfgs by timm's naming (family-first `vit_*` / `deit*` names get the
non-standard cfg checks, the others the standard ones). fx and TorchScript take one model per family
and plan (tests/models/zoo.py); the cfg checks take every model. The ViTs are TorchScript exceptions, as
timm's EXCLUDE_JIT_FILTERS lists its own: scripting one raises a one-line error.
"""

import fnmatch

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from attnreuse.models.vit import OLD_NAMES
from zoo import HEAVY, NAMES
NON_STD = ["vit_*", "deit*"]  # timm's NON_STD_FILTERS entries our families fall under
EXCLUDE_JIT = {"vit_*": "plan blocks call the FLAT kernels", "deit*": "plan blocks call the FLAT kernels"}
TRACER = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)


def _matches(name, patterns):
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _small(name, **kwargs):
    """The model at a test size and an input batch of 2 for it."""
    if name.startswith("uniform"):
        model, size = timm.create_model(name, img_size=64, **kwargs), 64
    else:
        model, size = timm.create_model(name, img_size=32, depth=4, **kwargs), 32
    return model, torch.randn(2, 3, size, size)


def _fx(model):
    eval_nodes = get_graph_node_names(model, tracer_kwargs=TRACER)[1]
    return create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=TRACER)


def test_names_follow_timms_family_first_convention():
    assert all(_matches(n, NON_STD) or n.startswith("uniform_") for n in NAMES), NAMES


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_names_still_build_the_same_model(old):
    with pytest.warns(UserWarning, match="deprecated model name"):
        model = timm.create_model(old, img_size=32, depth=4)
    assert model.pretrained_cfg["architecture"] == OLD_NAMES[old] and OLD_NAMES[old] in NAMES


@pytest.mark.parametrize("name", HEAVY)
def test_fx_forward_matches_eager_and_backward_reaches_every_parameter(name):
    model, x = _small(name)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        traced = next(iter(_fx(model)(x).values()))
    assert torch.equal(traced, expected)

    model, x = _small(name, num_classes=42)
    model.train()
    out = next(iter(_fx(model)(x).values()))
    assert out.shape == (2, 42)
    out.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", HEAVY)
def test_torchscript_or_a_one_line_refusal(name):
    model, x = _small(name)
    model.eval()
    if _matches(name, EXCLUDE_JIT):
        with pytest.raises(RuntimeError, match=r"not TorchScript-scriptable.*torch.export"):
            torch.jit.script(model)
        return
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        (fx_scripted,) = torch.jit.script(_fx(model))(x).values()
        torch.testing.assert_close(fx_scripted, expected)


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg(name):
    model = timm.create_model(name).eval()
    cfg, state = model.pretrained_cfg, model.state_dict()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
    if _matches(name, NON_STD):
        return  # timm checks these (its own ViTs included) without pool_size; the ViT tests cover shapes
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        features = model.forward_features(x)
        assert tuple(features.shape[-2:]) == tuple(cfg["pool_size"]) and features.shape[1] == model.num_features
        model.reset_classifier(0, "")
        assert tuple(model(x).shape[-2:]) == tuple(cfg["pool_size"])
