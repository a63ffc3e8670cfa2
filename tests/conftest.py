"""Test-wide settings: one intra-op thread per test worker (the suite runs with `-n 2` on 2 cores),
deterministic seeds."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
