"""Evaluation: the evaluator protocol, the inference loop, COCO metrics and result checks.

Mirrors the parts of ``detectron2.evaluation`` that sephnet uses.
"""

from sephnet.d2.evaluation.coco_evaluation import COCOEvaluator
from sephnet.d2.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)
from sephnet.d2.evaluation.testing import print_csv_format, verify_results

__all__ = [
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_context",
    "inference_on_dataset",
    "print_csv_format",
    "verify_results",
]
