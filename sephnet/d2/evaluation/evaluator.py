"""Evaluator interface and the inference loop that feeds it.

:func:`inference_on_dataset` runs a model over a data loader under ``torch.no_grad()`` and
eval mode, hands every ``(inputs, outputs)`` batch to a :class:`DatasetEvaluator`, times
data loading / inference / evaluation separately (ignoring up to 5 warm-up batches) and
returns ``evaluator.evaluate()``.
"""

import datetime
import logging
import time
from collections import OrderedDict, abc
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import torch
from torch import nn

from sephnet.d2.utils.comm import get_world_size, is_main_process
from sephnet.d2.utils.logger import log_every_n_seconds

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]


class DatasetEvaluator:
    """Accumulates model outputs over a dataset and turns them into metrics.

    Protocol: ``reset()`` before a round, ``process(inputs, outputs)`` per batch (both lists,
    one entry per image, paired with ``zip``), then ``evaluate()``, which returns
    ``{task name: {metric name: value}}`` (e.g. ``{"bbox": {"AP50": 80.0}}``) or ``None``.
    """

    def reset(self) -> None:
        """Forget everything processed so far."""

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Consume one batch: the model's inputs and the outputs it returned for them."""

    def evaluate(self) -> Optional[Dict[str, Any]]:
        """Return the metrics of everything processed since the last ``reset()``."""
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators as one; their results are merged into one dict."""

    def __init__(self, evaluators: List[DatasetEvaluator]):
        """
        Args:
            evaluators: the evaluators to combine, called in this order.
        """
        super().__init__()
        self._evaluators = evaluators

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Dict[str, Any]:
        """Merge every evaluator's result (main process only).

        Raises:
            KeyError: two evaluators report the same task name (also an ``AssertionError``,
                as in detectron2).
        """
        results: Dict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not is_main_process() or result is None:
                continue
            for task, value in result.items():
                if task in results:
                    raise _DuplicateResultKey(
                        f"Different evaluators produce results with the same key {task}"
                    )
                results[task] = value
        return results


class _DuplicateResultKey(KeyError, AssertionError):
    """Two evaluators in a :class:`DatasetEvaluators` returned the same task name."""


def inference_on_dataset(
    model: Callable,
    data_loader: Iterable,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
) -> Dict[str, Any]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate the outputs.

    An ``nn.Module`` is switched to eval mode for the loop and restored afterwards; wrap it
    to override ``train()``/``eval()`` if you want otherwise. The first ``min(5, len - 1)``
    batches are warm-up and excluded from the timings. Progress is logged at most every 5
    seconds as ``"Inference done 11/100. Dataloading: 0.0010 s/iter. Inference: 0.0500
    s/iter. Eval: 0.0002 s/iter. Total: 0.0512 s/iter. ETA=0:00:04"``.

    Args:
        model: callable taking one batch (a list of dicts) and returning its outputs.
        data_loader: iterable with a ``len()``.
        evaluator: an evaluator, a list of them, or ``None`` to only benchmark.

    Returns:
        ``evaluator.evaluate()``, or ``{}`` when it returns ``None``.
    """
    num_devices = get_world_size()
    logger = logging.getLogger(__name__)
    total = len(data_loader)  # the loop needs a fixed length for its ETA and timings
    logger.info("Start inference on {} batches".format(total))

    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, abc.MutableSequence):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    num_warmup = min(5, total - 1)
    start_time = time.perf_counter()
    data_time = compute_time = eval_time = 0.0
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())

        data_start = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            data_time += time.perf_counter() - data_start
            if idx == num_warmup:
                # Warm-up is over: measure from here on.
                start_time = time.perf_counter()
                data_time = compute_time = eval_time = 0.0

            compute_start = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            compute_time += time.perf_counter() - compute_start

            eval_start = time.perf_counter()
            evaluator.process(inputs, outputs)
            eval_time += time.perf_counter() - eval_start

            measured = idx + 1 - (num_warmup if idx >= num_warmup else 0)
            compute_per_iter = compute_time / measured
            if idx >= num_warmup * 2 or compute_per_iter > 5:
                total_per_iter = (time.perf_counter() - start_time) / measured
                eta = datetime.timedelta(seconds=int(total_per_iter * (total - idx - 1)))
                log_every_n_seconds(
                    logging.INFO,
                    f"Inference done {idx + 1}/{total}. "
                    f"Dataloading: {data_time / measured:.4f} s/iter. "
                    f"Inference: {compute_per_iter:.4f} s/iter. "
                    f"Eval: {eval_time / measured:.4f} s/iter. "
                    f"Total: {total_per_iter:.4f} s/iter. "
                    f"ETA={eta}",
                    n=5,
                )
            data_start = time.perf_counter()

    total_time = time.perf_counter() - start_time
    measured_iters = max(total - num_warmup, 1)
    logger.info(
        "Total inference time: {} ({:.6f} s / iter per device, on {} devices)".format(
            str(datetime.timedelta(seconds=total_time)), total_time / measured_iters, num_devices
        )
    )
    logger.info(
        "Total inference pure compute time: {} ({:.6f} s / iter per device, on {} devices)".format(
            str(datetime.timedelta(seconds=int(compute_time))),
            compute_time / measured_iters,
            num_devices,
        )
    )
    results = evaluator.evaluate()
    return {} if results is None else results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
