"""Shared pytest setup: deterministic seeds for every test, one intra-op thread per worker."""
import random

import numpy as np
import pytest
import torch

# CI runs the suite on 2 cores with 2 pytest-xdist workers: one torch thread each avoids
# oversubscription, which makes the many tiny convolutions of these tests far slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
