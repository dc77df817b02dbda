"""Log capture that works whatever ran before: ``setup_logger`` (called by ``default_setup`` and
``DefaultTrainer``) stops the framework loggers from propagating to the root, where pytest's
``caplog`` listens. Each test here sees them propagating and leaves them as it found them."""
import logging

import pytest

from sephnet.d2.utils.logger import setup_logger

_LOGGERS = ("sephnet", "sephnet.d2", "d2", "detectron2", "fvcore")


@pytest.fixture(autouse=True)
def propagating_framework_loggers():
    saved = {}
    for name in _LOGGERS:
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
