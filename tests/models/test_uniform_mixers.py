"""UniForm's mixers are registered objects: the default model is unchanged, the probes built by name
equal the probes swapped into a built model, and a new mixer is one registration."""

import copy

import pytest
import timm
import torch
from torch import nn

import attnreuse  # noqa: F401  (registers the models)
from attnreuse.layers.conv import Residual
from attnreuse.models import uniform_mixers
from attnreuse.models.uniform import UniForm, apply_mixer
from attnreuse.models.uniform_mixers import UniFormMixer, get_mixer, mixer_names, register_mixer

TINY = dict(img_size=32, embed_dim=(32, 48), depth=(1, 1), num_heads=(2, 2), window_size=2)


def _model(mixer: str = "reuse") -> UniForm:
    torch.manual_seed(0)
    return UniForm(num_classes=5, mixer=mixer, **TINY).eval()


def _randomise_bn(model: nn.Module) -> None:
    """BatchNorm statistics and affine away from their initial values, so outputs tell modules apart."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.copy_(torch.randn(t.shape, generator=gen) * 0.3)
            m.running_var.data.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def test_the_registry_names_its_mixers():
    assert {"reuse", "pointwise", "none"} <= set(mixer_names())
    with pytest.raises(ValueError, match="unknown UniForm mixer 'fast'; known mixers: reuse, pointwise, none"):
        UniForm(mixer="fast", **TINY)
    with pytest.raises(ValueError, match="a mixer needs a new, non-empty name"):
        register_mixer(get_mixer("reuse"))


def test_the_default_mixer_keeps_the_reuse_attention_keys():
    keys = _model().state_dict().keys()
    assert "stages.0.blocks.0.mixer.m.qk.conv.weight" in keys and "stages.1.blocks.0.mixer.m.attention_biases" in keys
    assert keys == _model("reuse").state_dict().keys()


@pytest.mark.parametrize("name", ["pointwise", "none"])
def test_a_probe_built_by_name_equals_the_probe_swapped_into_a_model(name):
    model = _model()
    _randomise_bn(model)
    swapped = apply_mixer(copy.deepcopy(model), name)
    built = _model(name)
    kept = {k: v for k, v in model.state_dict().items() if k in built.state_dict()}
    assert built.state_dict().keys() == swapped.state_dict().keys() == kept.keys()  # the mixer keeps timm's names
    built.load_state_dict(kept)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built(x), swapped(x))
        assert not torch.allclose(built(x), model(x))  # the mixer changed something
    dropped = set(model.state_dict()) - set(kept)
    assert dropped and all(".mixer." in k for k in dropped)


def test_a_new_mixer_is_one_registration(monkeypatch):
    monkeypatch.setattr(uniform_mixers, "_MIXERS", copy.deepcopy(uniform_mixers._MIXERS))

    class DepthwiseMixer(UniFormMixer):
        name = "dw3"
        help = "a residual 3x3 depthwise conv"

        def build(self, dim, num_heads, *, key_dim, window_size, kernels, drop_path):
            return Residual(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), drop_path)

        def replace(self, mixer):
            return self.build(mixer.m.dim, mixer.m.num_heads, key_dim=0, window_size=0, kernels=(), drop_path=0.0)

    register_mixer(DepthwiseMixer())
    model = timm.create_model("uniform_xs", mixer="dw3", **TINY).eval()
    assert isinstance(model.stages[0].blocks[0].mixer.m, nn.Conv2d)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(ValueError, match="apply to UniForm models"):
        apply_mixer(nn.Linear(2, 2), "dw3")
