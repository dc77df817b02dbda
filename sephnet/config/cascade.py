"""Cascade R-CNN on sephnet's heads (``SephCascadeROIHeads``, docs/components.md#cascade): no new
keys.

Cascade reuses detectron2's keys with their upstream meaning, so this module only checks
them when ``MODEL.ROI_HEADS.NAME`` is ``"SephCascadeROIHeads"``:

* ``MODEL.ROI_BOX_CASCADE_HEAD.IOUS``: the stages' IoU thresholds, (0.5, 0.6, 0.7) in the
  "Cascade" rows, (0.4, 0.6, 0.7) in "Cascade+roi nr=512+min iou threshold=0.4"
  (with ``MODEL.ROI_HEADS.IOU_THRESHOLDS: [0.4]``);
* ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS``: the stages' ``Box2BoxTransform`` weights,
  (10,10,5,5), (20,20,10,10), (30,30,15,15) as upstream;
* ``MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG``: must be True (asserted by the original too).

Each stage's box head and predictor are the ones selected by ``MODEL.SEPH.BOX_HEAD.NAME``
and ``MODEL.SEPH.PREDICTOR.NAME``.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]


def add_config(cfg: CfgNode) -> None:
    """Nothing to add: Cascade's keys are detectron2's (see the module docstring)."""


def validate_config(cfg: CfgNode) -> None:
    """With ``MODEL.ROI_HEADS.NAME = "SephCascadeROIHeads"``: class-agnostic regression, one
    weight tuple per stage IoU, and ``IOUS[0] == MODEL.ROI_HEADS.IOU_THRESHOLDS[0]``.

    Raises:
        ValueError: naming the offending keys and values.
    """
    if cfg.MODEL.ROI_HEADS.NAME != "SephCascadeROIHeads":
        return
    # Imported here so the config package imports no model code at module level.
    from sephnet.modeling.roi_heads.cascade import check_cascade_config

    check_cascade_config(cfg)
