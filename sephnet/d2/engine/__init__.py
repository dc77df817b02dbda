"""Training loop, hooks, defaults and the launcher of the portable core (detectron2.engine)."""
from .launch import DEFAULT_TIMEOUT, launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = ["DEFAULT_TIMEOUT", "launch", "AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase"]

# As in detectron2: hooks and defaults are importable from here but kept out of __all__.
from .hooks import *  # noqa: E402,F401,F403
from .defaults import *  # noqa: E402,F401,F403
from . import hooks  # noqa: E402,F401
