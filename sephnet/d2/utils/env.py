"""Environment helpers: RNG seeding and the torch version."""

import logging
import os
import random
from datetime import datetime
from typing import Optional

import numpy as np
import torch

__all__ = ["seed_all_rng", "TORCH_VERSION"]

TORCH_VERSION = tuple(int(x) for x in torch.__version__.split(".")[:2])
"""torch's (major, minor) version, for comparisons such as ``TORCH_VERSION >= (1, 8)``."""


def seed_all_rng(seed: Optional[int] = None) -> None:
    """Seed python's ``random``, numpy and torch (and set ``PYTHONHASHSEED``).

    Args:
        seed: the seed; ``None`` draws one from the pid, the clock and ``os.urandom`` and
            logs it.
    """
    if seed is None:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        )
        logging.getLogger(__name__).info("Using a generated random seed {}".format(seed))
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
