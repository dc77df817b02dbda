"""Reporting and checking evaluation results: ``print_csv_format``, ``verify_results``,
``flatten_results_dict``.

Results are ``{task: {metric: value}}`` dicts as returned by the evaluators.
"""

import logging
import pprint
import sys
from collections.abc import Mapping
from typing import Any, Dict

import numpy as np

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict"]


def print_csv_format(results: Mapping) -> None:
    """Log the main metrics as comma-separated lines, easy to paste into a spreadsheet.

    For each task, three INFO lines on logger ``sephnet.d2.evaluation.testing``::

        copypaste: Task: bbox
        copypaste: AP,AP50,AP75,APs,APm,APl
        copypaste: 40.2170,61.0049,43.6931,24.6510,43.4530,52.1013

    Metrics whose name contains "-" (per-category ones such as ``AP-person``) are left out.
    A task whose value is not a mapping is logged as ``copypaste: task=value``.

    Raises:
        TypeError: ``results`` is a non-empty non-mapping.
    """
    if not isinstance(results, Mapping) and len(results):
        raise TypeError(f"print_csv_format expects a mapping of task -> metrics, got {results!r}")
    logger = logging.getLogger(__name__)
    for task, res in results.items():
        if not isinstance(res, Mapping):
            logger.info(f"copypaste: {task}={res}")
            continue
        main = [(k, v) for k, v in res.items() if "-" not in k]
        logger.info("copypaste: Task: {}".format(task))
        logger.info("copypaste: " + ",".join(k for k, _ in main))
        logger.info("copypaste: " + ",".join("{0:.4f}".format(v) for _, v in main))


def verify_results(cfg: Any, results: Mapping) -> bool:
    """Check ``results`` against ``cfg.TEST.EXPECTED_RESULTS``.

    Each expectation is ``[task, metric, expected, tolerance]``; it passes when the metric
    exists, is finite and ``|actual - expected| <= tolerance``.

    Returns:
        ``True`` when all pass (or none are configured).

    Raises:
        SystemExit: some expectation failed (after logging expected and actual values),
            as in detectron2, so a CI run fails.
    """
    expected_results = cfg.TEST.EXPECTED_RESULTS
    if not len(expected_results):
        return True
    ok = True
    for task, metric, expected, tolerance in expected_results:
        actual = results[task].get(metric, None) if task in results else None
        if actual is None or not np.isfinite(actual) or abs(actual - expected) > tolerance:
            ok = False
    logger = logging.getLogger(__name__)
    if not ok:
        logger.error("Result verification failed!")
        logger.error("Expected Results: " + str(expected_results))
        logger.error("Actual Results: " + pprint.pformat(results))
        sys.exit(1)
    logger.info("Results verification passed.")
    return ok


def flatten_results_dict(results: Mapping) -> Dict[str, Any]:
    """Flatten nested mappings: ``{"bbox": {"AP": 1.0}}`` becomes ``{"bbox/AP": 1.0}``."""
    flat: Dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value).items():
                flat[f"{key}/{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat
