"""The value a decoupled ("seph") box head hands to its predictor.

A detectron2 box head returns one tensor that both the classifier and the box regressor
read. The log's heads split that into towers, so sephnet's box heads return a
:class:`DecoupledFeatures` instead, and sephnet's predictors accept one:

    pooled x[R, C, S, S] --box head--> DecoupledFeatures(cls, box, iou)
                                          |       |      '-> IoU branch   (optional)
                                          |       '--------> box deltas
                                          '----------------> class logits

Each field is ``[R, ...]`` (flattened or spatial; the predictor flattens). A head whose
towers are shared returns the same tensor in ``cls`` and ``box``. ``iou`` is ``None``
unless the head has an IoU tower; a predictor with an IoU branch then reads ``box``.
Heads declare the shapes of their fields in ``output_shapes`` (a dict with the keys
``"cls"``, ``"box"`` and, when present, ``"iou"``, each a ``ShapeSpec``).
"""
from typing import NamedTuple, Optional

import torch


class DecoupledFeatures(NamedTuple):
    """Per-ROI features of a decoupled box head; see the module docstring."""

    cls: torch.Tensor
    box: torch.Tensor
    iou: Optional[torch.Tensor] = None
