"""Shared pytest setup: deterministic seeds, one intra-op thread per worker, framework loggers
that propagate to pytest's log capture whatever ran before, and the ``sephnet_cfg`` config
fixture."""
import logging
import os
import random

import numpy as np
import pytest
import torch

from sephnet.backend import get_cfg, setup_logger
from sephnet.config import add_sephnet_config, validate_sephnet_config

# CI runs the suite on 2 cores with 2 pytest-xdist workers: one torch thread each avoids
# oversubscription, which makes the many tiny convolutions of these tests far slower.
# OMP_NUM_THREADS overrides it (tests/run_cpu_matrix.sh checks the suite with 1 and 2 threads).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

_FRAMEWORK_LOGGERS = ("sephnet", "sephnet.d2", "d2", "detectron2", "fvcore")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _propagating_framework_loggers():
    """``setup_logger`` (run by ``default_setup`` and trainers) stops the framework loggers
    from propagating to the root logger, where ``caplog`` listens. Every test starts with
    them propagating and leaves them as it found them."""
    saved = {}
    for name in _FRAMEWORK_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate, logger.level)
        logger.propagate = True
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
    setup_logger.cache_clear()


@pytest.fixture(scope="session")
def sephnet_cfg():
    """The shared config factory: ``sephnet_cfg(keys=None, *, narrow_r50=None,
    validate=False)`` (stateless, so session-scoped: module-scoped fixtures may use it too).

    Returns a fresh detectron2 config with sephnet's keys (``add_sephnet_config``) on the CPU,
    with ``keys`` (``{"MODEL.ROI_HEADS.NAME": "SephStandardROIHeads", ...}``, dotted full
    keys) merged in order through ``merge_from_list``, so an unknown key or a wrongly typed
    value fails the test; with ``validate`` it also runs ``validate_sephnet_config``. Test
    modules keep their tiny sizes as a dict of keys and pass it here.

    ``narrow_r50=W`` first sets a narrow ResNet-50 FPN that builds and runs in milliseconds:
    16 stem channels, ``WIDTH_PER_GROUP`` W (res2's bottleneck width), ``RES2_OUT_CHANNELS``
    4W (so res5 has 32W channels) and ``FPN.OUT_CHANNELS`` 4W; ``keys`` may override them.
    """

    def make(keys=None, *, narrow_r50=None, validate=False):
        cfg = get_cfg()
        add_sephnet_config(cfg)
        cfg.MODEL.DEVICE = "cpu"
        if narrow_r50 is not None:
            cfg.merge_from_list([
                "MODEL.RESNETS.DEPTH", 50,
                "MODEL.RESNETS.STEM_OUT_CHANNELS", 16,
                "MODEL.RESNETS.WIDTH_PER_GROUP", narrow_r50,
                "MODEL.RESNETS.RES2_OUT_CHANNELS", 4 * narrow_r50,
                "MODEL.FPN.OUT_CHANNELS", 4 * narrow_r50,
            ])
        for key, value in (keys or {}).items():
            cfg.merge_from_list([key, value])
        if validate:
            validate_sephnet_config(cfg)
        return cfg

    return make
