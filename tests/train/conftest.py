"""Tiny training runs shared by the train tests: a 1-block ViT on 16x16 digits, a few steps."""

import pytest

from attnreuse.train.config import TrainConfig

TINY_MODEL = "vit_tiny_patch16_224"
TINY_KWARGS = {"img_size": 16, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2.0}


def tiny_config(output, **overrides) -> TrainConfig:
    base = dict(
        model=TINY_MODEL, output=str(output), model_kwargs=dict(TINY_KWARGS), epochs=2, warmup_epochs=1,
        batch_size=16, lr=1e-3, limit_train_batches=3, progress=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture
def make_config():
    return tiny_config
