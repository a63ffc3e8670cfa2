"""Tests for the deliberate bugs the 2026-11-30 mutation audit found the suite missed: each fails
on its mutant (DistillLoss without its distillation term; a user `scale` ignored on the tiled path or
the SDPA dispatch; Taylor attention's near-zero-denominator guard removed on the training path; a
ReLU removed from UniForm's PatchMerging, now checked against timm's efficientvit_msra modules)."""

import pytest
import torch
import torch.nn.functional as F
from timm.models import efficientvit_msra as evit

from attnreuse import ops
from attnreuse.layers.conv import ConvFFN, PatchMerging
from attnreuse.ops import reference
from attnreuse.train.distill import DistillLoss


def test_distill_loss_is_the_weighted_sum_of_its_two_terms():
    teacher = torch.nn.Linear(5, 4)
    x, student, target = torch.randn(6, 5), torch.randn(6, 4), torch.randint(0, 4, (6,))
    loss = DistillLoss(torch.nn.CrossEntropyLoss(), teacher, "soft", temperature=2.0, weight=0.3)(x, student, target)
    with torch.no_grad():
        t = teacher(x)
    kl = (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(student / 2, -1))).sum(-1).mean() * 4
    torch.testing.assert_close(loss, 0.7 * F.cross_entropy(student, target) + 0.3 * kl)


@pytest.mark.parametrize("backend", ["tiled", "dense", "sdpa"])
def test_a_user_scale_reaches_every_backend(backend):
    q, k, v = (torch.randn(2, 3, 20, 8, dtype=torch.float64) for _ in range(3))
    with ops.use_backend(backend):
        out = ops.softmax_attention(q, k, v, scale=0.37)
    torch.testing.assert_close(out, reference.softmax_attention(q, k, v, scale=0.37))
    assert not torch.allclose(out, reference.softmax_attention(q, k, v))  # 0.37 is not the default


def test_taylor_training_path_guards_a_zero_denominator():
    # center=None: denominator_i = M + scale * q_i . sum_j k_j; q_0 is chosen to make it exactly 0.
    M, D = 4, 2
    k = torch.ones(1, 1, M, D, dtype=torch.float64)
    q = torch.tensor([[[[-0.5, -0.5], [0.1, 0.2]]]], dtype=torch.float64)  # q_0 . sum k = -M
    v = torch.randn(1, 1, M, D, dtype=torch.float64)
    with torch.no_grad():
        inference = ops.taylor_attention(q, k, v, scale=1.0, center=None)
    training = ops.taylor_attention(q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), scale=1.0, center=None)
    assert torch.isfinite(training).all() and torch.isfinite(inference).all()
    torch.testing.assert_close(training.detach(), inference)


def _randomise_bn(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module.eval()


@pytest.mark.parametrize("ours, timms", [
    (lambda: PatchMerging(16, 24), lambda: evit.PatchMerging(16, 24)),
    (lambda: ConvFFN(16, 32), lambda: evit.ConvMlp(16, 32)),
])
def test_uniform_layers_equal_timms_efficientvit_msra(ours, timms):
    ref = _randomise_bn(timms())
    mine = ours().eval()
    renamed = {k.replace(".c.", ".conv."): v for k, v in ref.state_dict().items()}
    mine.load_state_dict(renamed)
    x = torch.randn(2, 16, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), ref(x))
