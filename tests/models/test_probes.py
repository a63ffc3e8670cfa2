"""Mixer probes (`attnreuse.models.probes`): names, and what each probe keeps of the model it is
cut from (the mixers themselves: test_uniform_mixers.py); their bench records are in
tests/bench/test_models_bench.py."""

import pytest
import timm
import torch

import attnreuse  # noqa: F401 - registers the models
from attnreuse.models.peers import PEERS
from attnreuse.models.probes import apply_mixer_probe, split_probe
from attnreuse.models.uniform_mixers import PointwiseMixer
from attnreuse.deploy import deploy_model
from attnreuse.layers import ReuseAttention2d


def test_names_split():
    assert split_probe("uniform_l") == ("uniform_l", None)
    assert split_probe("uniform_l:mixer=none") == ("uniform_l", "none")


@pytest.mark.parametrize(
    "name, message",
    [("uniform_l:mixer=fast", "must be one of"), ("efficientvit_m0:mixer=none", "apply to UniForm models")],
)
def test_bad_probe_names(name, message):
    with pytest.raises(ValueError, match=message):
        split_probe(name)


def _uniform():
    torch.manual_seed(0)
    model = timm.create_model("uniform_xs", img_size=64, num_classes=10).eval()
    for m in model.modules():  # non-zero BN gains, so every branch reaches the logits
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_pointwise_probe_keeps_only_the_mixers_1x1_convs():
    model = _uniform()
    mixers = [m for m in model.modules() if isinstance(m, ReuseAttention2d)]
    x = torch.randn(2, mixers[0].dim, 4, 4)
    with torch.no_grad():
        want = mixers[0].proj(torch.relu(torch.cat([mixers[0].qk(x), x[:, mixers[0].dim // 2:]], 1)))
    apply_mixer_probe(model, "pointwise")
    probes = [m for m in model.modules() if isinstance(m, PointwiseMixer)]
    assert len(probes) == len(mixers) and not any(isinstance(m, ReuseAttention2d) for m in model.modules())
    assert probes[0].qk is mixers[0].qk and probes[0].proj is mixers[0].proj
    with torch.no_grad():
        torch.testing.assert_close(probes[0](x), want)
        # the probe folds like the mixer: the deployed probe model computes what the eager one does
        img = torch.randn(2, 3, 64, 64)
        eager = model(img)
        torch.testing.assert_close(deploy_model(model)(img), eager, atol=1e-4, rtol=1e-4)


def test_none_probe_removes_every_mixer_and_other_models_are_refused():
    model = apply_mixer_probe(_uniform(), "none")
    assert not any(isinstance(m, (ReuseAttention2d, PointwiseMixer)) for m in model.modules())
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="apply to UniForm models"):
        apply_mixer_probe(timm.create_model(PEERS[0]), "none")
    with pytest.raises(ValueError, match="probe must be one of"):
        apply_mixer_probe(_uniform(), "fast")
