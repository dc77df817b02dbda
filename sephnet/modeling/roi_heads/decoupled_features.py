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

Input side (ROI hooks and the multi-scale pooler, SEPH_SPEC B §2.11-2.13): what reaches a
box head is one of

* a pooled ``Tensor[R, C, S, S]`` read by every tower;
* a ``DecoupledFeatures(cls_in, box_in, iou_in)`` made by an ROI hook (e.g. a non-local
  block on the classification input only): each tower reads its own field, and the IoU
  tower reads ``box_in`` when ``iou_in`` is None (:func:`split_head_input`);
* a :class:`ContextPair` ``(box, context)`` from the multi-scale pooler, read only by the
  heads and hooks that say so (context-attention heads, ``IouHeadNonLocalROIHeadsHook``).
"""
from typing import NamedTuple, Optional, Tuple, Union

import torch


class DecoupledFeatures(NamedTuple):
    """Per-ROI features of a decoupled box head; see the module docstring."""

    cls: torch.Tensor
    box: torch.Tensor
    iou: Optional[torch.Tensor] = None


class ContextPair(NamedTuple):
    """Two crops of each ROI from the multi-scale pooler.

    ``box[R, C, S, S]`` is the box crop, ``context[R, C, M, M]`` the enlarged context crop.
    """

    box: torch.Tensor
    context: torch.Tensor


def split_head_input(
    x: Union[torch.Tensor, DecoupledFeatures]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (cls_in, box_in, iou_in) a box head's towers read; see the module docstring.

    Raises:
        TypeError: ``x`` is a :class:`ContextPair` (the head needs a context-attention head
            or a hook that consumes it) or not a tensor.
    """
    if isinstance(x, ContextPair):
        raise TypeError(
            "This box head takes pooled features or DecoupledFeatures, not the multi-scale "
            "pooler's ContextPair; use a context-attention head or an ROI hook that reads it."
        )
    if isinstance(x, DecoupledFeatures):
        return x.cls, x.box, x.box if x.iou is None else x.iou
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"Box-head input must be a Tensor or DecoupledFeatures; got {type(x).__name__}."
        )
    return x, x, x
