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

Input side (ROI hooks and the multi-scale pooler, docs/components.md#roi-pooling): what reaches a
box head is one of

* a pooled ``Tensor[R, C, S, S]`` read by every tower;
* a ``DecoupledFeatures(cls_in, box_in, iou_in)`` made by an ROI hook (e.g. a non-local
  block on the classification input only): each tower reads its own field, and the IoU
  tower reads ``box_in`` when ``iou_in`` is None (:func:`split_head_input`);
* a :class:`ContextPair` ``(box, context)`` from the multi-scale pooler. The
  context-attention heads and ``IouHeadNonLocalROIHeadsHook`` read it their own way; any
  other sephnet head reads it positionally like the original (sephv19): the cls tower reads
  the box crop, the box (and IoU) tower the context crop, which then has to have the box
  crop's size for the head's declared shapes to hold.
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

    A :class:`ContextPair` gives ``(box, context, context)`` (sephv19: the cls tower on the
    box crop, the box tower on the context crop).

    Raises:
        TypeError: ``x`` is not a tensor or one of the tuples above.
    """
    if isinstance(x, ContextPair):
        return x.box, x.context, x.context
    if isinstance(x, DecoupledFeatures):
        return x.cls, x.box, x.box if x.iou is None else x.iou
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            "Box-head input must be a Tensor, DecoupledFeatures or ContextPair; got "
            f"{type(x).__name__}."
        )
    return x, x, x
