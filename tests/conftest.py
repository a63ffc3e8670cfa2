"""Test-wide settings: one intra-op thread per test worker (the suite runs with `-n 2` on 2 cores),
deterministic seeds, and the slow tests first."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (a minute or more each: the README's and benchmarks.md's commands, the
    quick demo) run first: with `-n 2` the other worker takes the quick tests meanwhile, and no
    worker is left with a long test while the other has finished. Tests marked `last` (they read
    what a slow test made, e.g. the quick demo's run directory) run at the end, so that no worker
    waits for another's slow test."""
    def rank(item):
        return 0 if item.get_closest_marker("slow") else 2 if item.get_closest_marker("last") else 1

    items.sort(key=rank)  # stable: file order within each rank


@pytest.fixture
def pico_run(tmp_path):
    """A train-style run directory of a 1-layer pico ViT (model.json + model.safetensors)."""
    import json

    from attnreuse.models import create_model
    from attnreuse.runs import save_model_weights

    name = "vit_attnreuse_pico_patch4_32"
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"name": name, "kwargs": {"depth": 1}}))
    save_model_weights(d / "model.safetensors", create_model(name, depth=1).state_dict())
    return d
