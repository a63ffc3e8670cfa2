"""A Taylor-plan ViT must learn: a short run on the digits that a broken sparse branch or a
training form unlike the deployed one would leave near chance (10%). Healthy runs reach about
70%; docs/taylor.md, "Stable training", tells the story of the seed that did not."""

import pytest
import timm
import torch

import attnreuse  # noqa: F401  (registers the models)


def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div(8).sub(1).unsqueeze(1).expand(-1, 3, -1, -1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm], torch.tensor(d.target)[perm]


def _train_tiny(steps=60, sabotage=None):
    """Eval-mode top-1 of a 1-block Taylor ViT (5 tokens) after `steps` AdamW updates, the sparse
    branch annealed as `attnreuse train` does; `sabotage(layer)` runs before every update."""
    x, y = _digits()
    torch.manual_seed(0)
    model = timm.create_model("vit_attnreuse_pico_patch4_32", attn_plan="taylor", img_size=8, patch_size=4,
                              embed_dim=32, depth=1, num_heads=2, num_classes=10)
    layers = [m for m in model.modules() if hasattr(m, "set_progress")]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        for layer in layers:
            layer.set_progress(step / steps)
            if sabotage is not None:
                sabotage(layer)
        idx = torch.randint(0, 1200, (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x[1200:]).argmax(-1) == y[1200:]).float().mean().item()


def test_tiny_taylor_vit_leaves_chance():
    top1 = _train_tiny()
    assert top1 > 0.5, f"a 60-step Taylor ViT reached {top1:.1%} top-1 on digits (chance 10%, healthy ~70%)"


def test_the_check_catches_a_sparse_branch_that_blows_up():
    def blow_up(layer):
        layer.sparse_weight *= 1e3

    assert _train_tiny(sabotage=blow_up) < 0.5
