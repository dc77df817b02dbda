"""Learning-rate schedules (detectron2.solver.lr_scheduler).

The modern path is :class:`LRMultiplier`: a torch LR scheduler whose value at iteration
``t`` is ``base_lr * multiplier(t / max_iter)`` for every parameter group, where
``multiplier`` is a stateless fvcore :class:`ParamScheduler` over the training progress in
``[0, 1)``. :class:`WarmupParamScheduler` prepends a warmup phase to such a multiplier.

:class:`WarmupMultiStepLR` and :class:`WarmupCosineLR` are the older, self-contained
schedulers kept for code that still instantiates them directly.
"""
import logging
import math
from bisect import bisect_right
from typing import Dict, List

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)

__all__ = ["WarmupParamScheduler", "LRMultiplier", "WarmupMultiStepLR", "WarmupCosineLR"]

logger = logging.getLogger(__name__)

_WARMUP_METHODS = ("linear", "constant")


class WarmupParamScheduler(CompositeParamScheduler):
    """A :class:`ParamScheduler` that runs a warmup phase, then ``scheduler``.

    For progress ``p`` in ``[0, warmup_length)`` the value ramps (``"linear"``) from
    ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)``, or stays at
    ``warmup_factor * scheduler(0)`` (``"constant"``). Afterwards the value is
    ``scheduler(p)`` evaluated at the *absolute* progress ``p`` (the wrapped schedule is not
    shifted or compressed by the warmup).
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ):
        """
        Args:
            scheduler: the schedule that follows the warmup.
            warmup_factor: the warmup start value relative to ``scheduler(0)``, e.g. 0.001.
            warmup_length: the warmup's share of the whole run, in ``[0, 1]``.
            warmup_method: ``"linear"`` or ``"constant"``.

        Raises:
            ValueError: unknown ``warmup_method``.
        """
        if warmup_method not in _WARMUP_METHODS:
            raise ValueError(
                f"Unknown warmup method {warmup_method!r}; expected one of {_WARMUP_METHODS}."
            )
        first = warmup_factor * scheduler(0.0)
        if warmup_method == "linear":
            warmup: ParamScheduler = LinearParamScheduler(first, scheduler(warmup_length))
        else:
            warmup = ConstantParamScheduler(first)
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "fixed"],
            lengths=[warmup_length, 1.0 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler._LRScheduler):
    """Scale every parameter group's initial LR by an fvcore multiplier schedule.

    After ``k`` calls to :meth:`step`, group ``g`` has ``lr = base_lrs[g] *
    multiplier(k / max_iter)``. Relative LRs between groups (e.g. bias LR factors) are
    kept for the whole run.

    Only ``base_lrs`` and ``last_epoch`` (the iteration) are checkpointed: the fvcore
    multiplier is a pure function of progress and is rebuilt from the config.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ):
        """
        Args:
            optimizer: the optimizer whose groups' ``lr`` are driven.
            multiplier: an fvcore :class:`ParamScheduler` over progress in ``[0, 1)``.
            max_iter: the number of training iterations (progress = iter / max_iter).
            last_iter: the iteration of the last completed step (``-1`` = fresh start),
                torch's ``last_epoch``.

        Raises:
            ValueError: ``multiplier`` is not a :class:`ParamScheduler`.
        """
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(
                "LRMultiplier(multiplier=) must be an fvcore ParamScheduler, "
                f"got {type(multiplier).__name__}: {multiplier!r}."
            )
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> Dict[str, object]:
        """The scheduler's resumable state: ``{"base_lrs", "last_epoch"}``."""
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        """LR of every parameter group at iteration ``self.last_epoch``."""
        scale = self._multiplier(self.last_epoch / self._max_iter)
        return [lr * scale for lr in self.base_lrs]


def _warmup_factor(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """Multiplier of the legacy schedulers' warmup at iteration ``it`` (1.0 after it)."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        progress = it / warmup_iters
        return warmup_factor + (1.0 - warmup_factor) * progress
    raise ValueError(f"Unknown warmup method {method!r}; expected one of {_WARMUP_METHODS}.")


class WarmupMultiStepLR(torch.optim.lr_scheduler._LRScheduler):
    """Legacy: warmup then multiply by ``gamma`` at each milestone.

    ``lr(t) = base_lr * warmup(t) * gamma ** (number of milestones <= t)``, where
    ``warmup(t)`` ramps from ``warmup_factor`` to 1 over ``warmup_iters`` (linear), or stays
    at ``warmup_factor`` (constant). Prefer :class:`LRMultiplier`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: List[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        logger.warning(
            "WarmupMultiStepLR is deprecated; use LRMultiplier with an fvcore ParamScheduler."
        )
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing integers, got {list(milestones)}.")
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        """LR of every parameter group at iteration ``self.last_epoch``."""
        it = self.last_epoch
        scale = _warmup_factor(self.warmup_method, it, self.warmup_iters, self.warmup_factor)
        scale *= self.gamma ** bisect_right(self.milestones, it)
        return [lr * scale for lr in self.base_lrs]

    def _compute_values(self) -> List[float]:
        return self.get_lr()


class WarmupCosineLR(torch.optim.lr_scheduler._LRScheduler):
    """Legacy: half-cosine decay to 0 over ``max_iters``, times the warmup factor.

    ``lr(t) = base_lr * warmup(t) * (1 + cos(pi * t / max_iters)) / 2``. Prefer
    :class:`LRMultiplier`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        logger.warning(
            "WarmupCosineLR is deprecated; use LRMultiplier with an fvcore ParamScheduler."
        )
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        """LR of every parameter group at iteration ``self.last_epoch``."""
        it = self.last_epoch
        scale = _warmup_factor(self.warmup_method, it, self.warmup_iters, self.warmup_factor)
        scale *= 0.5 * (1.0 + math.cos(math.pi * it / self.max_iters))
        return [lr * scale for lr in self.base_lrs]

    def _compute_values(self) -> List[float]:
        return self.get_lr()
