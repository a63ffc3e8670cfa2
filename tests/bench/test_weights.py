"""`bench.weights.randomize_batchnorms`: reproducible, every BatchNorm changed, branches live."""

import timm
import torch

import attnreuse  # noqa: F401 - registers the models
from attnreuse.bench.weights import randomize_batchnorms


def _bns(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_every_batchnorm_is_randomised_reproducibly_and_the_logits_come_alive():
    torch.manual_seed(0)
    fresh = timm.create_model("uniform_xs", img_size=64, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        quiet = fresh(x).abs().max()
    a = randomize_batchnorms(fresh, seed=3)
    torch.manual_seed(0)
    b = randomize_batchnorms(timm.create_model("uniform_xs", img_size=64, num_classes=10).eval(), seed=3)
    for bn_a, bn_b in zip(_bns(a), _bns(b), strict=True):
        assert 0.5 <= bn_a.weight.min() and bn_a.weight.max() < 1.5 and bn_a.running_var.min() >= 0.5
        for name in ("weight", "bias", "running_mean", "running_var"):
            torch.testing.assert_close(getattr(bn_a, name), getattr(bn_b, name), atol=0, rtol=0)
    with torch.no_grad():
        assert quiet < 1e-2 < a(x).abs().max()
