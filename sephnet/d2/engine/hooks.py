"""Standard training hooks (detectron2.engine.hooks).

:class:`DefaultTrainer` registers, in this order: :class:`IterationTimer`,
:class:`LRScheduler`, :class:`PreciseBN` (when enabled), :class:`PeriodicCheckpointer`
(main process), :class:`EvalHook`, :class:`PeriodicWriter` (main process).
"""
import datetime
import logging
import math
import operator
import time
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.common.timer import Timer
from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

from sephnet.d2.solver.lr_scheduler import LRMultiplier
from sephnet.d2.utils import comm
from sephnet.d2.utils.events import EventStorage, EventWriter

from .train_loop import HookBase

__all__ = [
    "CallbackHook",
    "IterationTimer",
    "PeriodicWriter",
    "PeriodicCheckpointer",
    "BestCheckpointer",
    "LRScheduler",
    "EvalHook",
    "PreciseBN",
]

logger = logging.getLogger(__name__)

_TrainerCallback = Optional[Callable[[Any], None]]


class CallbackHook(HookBase):
    """A hook made of user functions, each called with the trainer as its only argument."""

    def __init__(
        self,
        *,
        before_train: _TrainerCallback = None,
        after_train: _TrainerCallback = None,
        before_step: _TrainerCallback = None,
        after_step: _TrainerCallback = None,
    ):
        self._before_train = before_train
        self._after_train = after_train
        self._before_step = before_step
        self._after_step = after_step

    def before_train(self) -> None:
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        if self._after_train:
            self._after_train(self.trainer)
        # The callbacks may close over the trainer; drop them so it can be freed.
        self._before_train = self._after_train = self._before_step = self._after_step = None

    def before_step(self) -> None:
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self) -> None:
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Record each step's duration as the scalar ``time`` and log a summary at the end.

    A step is timed from this hook's ``before_step`` to its ``after_step``, so register it
    first to include the other hooks' cheap ``before_step`` work only. The first
    ``warmup_iter`` steps are not recorded.
    """

    def __init__(self, warmup_iter: int = 3):
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start_time = time.perf_counter()
        self._total_timer = Timer()

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total = time.perf_counter() - self._start_time
        in_steps = self._total_timer.seconds()
        num_iter = self.trainer.storage.iter + 1 - self.trainer.start_iter - self._warmup_iter
        if num_iter > 0 and in_steps > 0:
            logger.info(
                "Overall training speed: %d iterations in %s (%.4f s / it)",
                num_iter,
                datetime.timedelta(seconds=int(in_steps)),
                in_steps / num_iter,
            )
        logger.info(
            "Total training time: %s (%s on hooks)",
            datetime.timedelta(seconds=int(total)),
            datetime.timedelta(seconds=int(total - in_steps)),
        )

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if done >= self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
        else:
            # Still warming up: restart the overall clocks.
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


class PeriodicWriter(HookBase):
    """Call ``write()`` on each writer every ``period`` steps and after the last step;
    close them after training."""

    def __init__(self, writers: List[EventWriter], period: int = 20):
        """
        Raises:
            TypeError: a writer is not an :class:`EventWriter`.
        """
        for w in writers:
            if not isinstance(w, EventWriter):
                raise TypeError(f"PeriodicWriter expects EventWriter instances, got {w!r}.")
        self._writers = writers
        self._period = period

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()

    def after_train(self) -> None:
        for w in self._writers:
            w.write()
            w.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """fvcore's :class:`~fvcore.common.checkpoint.PeriodicCheckpointer` as a hook.

    After step ``i`` it saves ``{prefix}_{i:07d}`` when ``(i + 1) % period == 0`` and
    ``{prefix}_final`` after the last step, each with ``iteration=i`` plus whatever the
    checkpointer's checkpointables hold (for :class:`DefaultTrainer`: the trainer state,
    i.e. optimizer, scheduler, RNG states and data position).
    """

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        self.step(self.trainer.iter)

    def after_train(self) -> None:
        """Write ``{prefix}_final`` when the run was resumed from its last iteration's
        checkpoint (killed while writing the final file): no step ran to write it (addition
        over detectron2 v0.6)."""
        if self.trainer.start_iter == self.max_iter:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=self.max_iter - 1)


class BestCheckpointer(HookBase):
    """Save ``{file_prefix}.pth`` whenever the tracked evaluation metric improves.

    Register it after the hook producing the metric (e.g. :class:`EvalHook`).
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Checkpointer,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ) -> None:
        """
        Args:
            eval_period: the :class:`EvalHook` period.
            checkpointer: saves the model.
            val_metric: storage key of the metric, e.g. ``"bbox/AP50"``.
            mode: ``"max"`` or ``"min"``: which direction is better.
            file_prefix: checkpoint file name (without ``.pth``).

        Raises:
            ValueError: unknown ``mode``.
        """
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpointer mode={mode!r}; expected 'max' or 'min'.")
        self._period = eval_period
        self._val_metric = val_metric
        self._compare = operator.gt if mode == "max" else operator.lt
        self._checkpointer = checkpointer
        self._file_prefix = file_prefix
        self.best_metric: Optional[float] = None
        self.best_iter: Optional[int] = None

    def _save_if_better(self) -> None:
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is None:
            logger.warning(
                "Metric '%s' is not in the event storage; no best checkpoint is written.",
                self._val_metric,
            )
            return
        value, metric_iter = latest
        if math.isnan(value) or math.isinf(value):
            return
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            logger.info(
                "%s = %.5f is not better than the best %.5f (iteration %d); not saving.",
                self._val_metric,
                value,
                self.best_metric,
                self.best_iter,
            )
            return
        self._checkpointer.save(self._file_prefix, iteration=metric_iter)
        logger.info(
            "Saved %s: %s = %.5f at iteration %d.", self._file_prefix, self._val_metric, value, metric_iter
        )
        self.best_metric, self.best_iter = value, metric_iter

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._save_if_better()

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._save_if_better()


class LRScheduler(HookBase):
    """Record the LR (scalar ``lr``) and step the LR scheduler after every iteration.

    The recorded LR is that of the "main" parameter group: the group with the most
    parameters, or, when every group holds one parameter, the first group with the most
    common LR.
    """

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None):
        """
        Args:
            optimizer: default: ``trainer.optimizer``.
            scheduler: a torch LR scheduler, or an fvcore :class:`ParamScheduler` (then a
                multiplier over the optimizer's LRs, wrapped in :class:`LRMultiplier` at
                ``before_train``); default: ``trainer.scheduler``.
        """
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        if isinstance(self.scheduler, ParamScheduler):
            self._scheduler = LRMultiplier(
                self._optimizer, self.scheduler, self.trainer.max_iter, last_iter=self.trainer.iter - 1
            )
        self._best_param_group_id = LRScheduler.get_best_param_group_id(self._optimizer)

    @staticmethod
    def get_best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
        """Index of the parameter group whose LR is reported (see the class docstring)."""
        groups = optimizer.param_groups
        largest = max(len(g["params"]) for g in groups)
        if largest == 1:
            common_lr = Counter(g["lr"] for g in groups).most_common(1)[0][0]
            return next(i for i, g in enumerate(groups) if g["lr"] == common_lr)
        return next(i for i, g in enumerate(groups) if len(g["params"]) == largest)

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    @property
    def scheduler(self) -> Any:
        return self._scheduler or self.trainer.scheduler

    def state_dict(self) -> Dict[str, Any]:
        if isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler):
            return self.scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler):
            logger.info("Restoring the LR scheduler's state ...")
            self.scheduler.load_state_dict(state_dict)


def _flatten_results(results: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"bbox": {"AP": 1}}`` → ``{"bbox/AP": 1}``."""
    flat: Dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten_results(value, name))
        else:
            flat[name] = value
    return flat


class EvalHook(HookBase):
    """Run ``eval_function`` every ``eval_period`` steps and after the last step.

    The function returns a nested dict of numbers (or nothing); its flattened entries
    (``"bbox/AP"``...) go to the event storage. Must be registered on all workers or none
    (it synchronizes them); give non-evaluating workers a no-op function.
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Optional[Mapping[str, Any]]]):
        """
        Args:
            eval_period: steps between evaluations; 0 evaluates only after the last step.
            eval_function: called with no arguments; returns a nested dict of floats.
        """
        self._period = eval_period
        self._func = eval_function

    def _do_eval(self) -> None:
        results = self._func()
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(f"EvalHook: eval_function must return a dict, got {results!r}.")
            flat = _flatten_results(results)
            for key, value in flat.items():
                try:
                    flat[key] = float(value)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"EvalHook: eval_function must return a nested dict of floats; "
                        f"got {key!r}: {value!r}."
                    ) from e
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._do_eval()

    def after_train(self) -> None:
        # Training that stopped early (an exception) is not evaluated.
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._do_eval()
        # The function usually closes over the trainer; drop it so the trainer can be freed.
        del self._func


class PreciseBN(HookBase):
    """Replace BatchNorm running statistics by exact averages over ``num_iter`` batches,
    every ``period`` steps (0: never) and after the last step.

    Disabled (with a log line) when ``model`` has no BatchNorm layer in training mode.
    """

    def __init__(self, period: int, model: torch.nn.Module, data_loader: Iterable, num_iter: int):
        self._disabled = len(get_bn_modules(model)) == 0
        if self._disabled:
            logger.info("PreciseBN is disabled: the model has no BatchNorm layer in training mode.")
            return
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._period = period
        self._data_iter = None

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (self._period > 0 and next_iter % self._period == 0):
            self.update_stats()

    def update_stats(self) -> None:
        """Recompute the BatchNorm statistics now (may also be called by hand)."""
        if self._disabled:
            return
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)

        def batches():
            count = 0
            while True:
                count += 1
                if count % 100 == 0:
                    logger.info("Running precise-BN ... %d/%d iterations.", count, self._num_iter)
                yield next(self._data_iter)

        # The model's losses during these forwards are not training metrics: record them
        # into a throw-away storage.
        with EventStorage():
            logger.info("Running precise-BN for %d iterations ...", self._num_iter)
            update_bn_stats(self._model, batches(), self._num_iter)
