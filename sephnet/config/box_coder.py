"""Keys of the ROI box coder: ``MODEL.SEPH.BOX_CODER.*``
(docs/components.md#corner-offset-box-coder, row "offset encode (sephv24)").

The default coder is detectron2's ``Box2BoxTransform`` with the upstream weights
``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS`` (Cascade: ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS``).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.BOX_CODER"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.BOX_CODER.*`` with defaults (detectron2's coder)."""
    cfg.MODEL.SEPH.BOX_CODER = CfgNode()
    # The box coder of the ROI box predictor (SephStandardROIHeads, GEROIHeads), a name in
    # SEPH_BOX_CODER_REGISTRY:
    # "Box2BoxTransform": detectron2's centre/log-size deltas with
    #   MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS (every log row but one);
    # "CornerOffsetBox2BoxTransform": corner offsets / CORNER_OFFSET_STEP, no size
    #   normalisation ("offset encode (sephv24)"). Not with SephCascadeROIHeads (its stages
    #   are defined by Box2BoxTransform weights).
    cfg.MODEL.SEPH.BOX_CODER.NAME = "Box2BoxTransform"
    # CornerOffsetBox2BoxTransform only: pixels per unit delta, one number > 0 or four
    # (x1, y1, x2, y2). The original used 0.02 of the padded image side (normalised
    # coordinates); 16 px is 0.02 x the log's 800 px long side (sephv24). A fixed pixel step
    # is sephnet's reading: detectron2's coder API has no image size.
    cfg.MODEL.SEPH.BOX_CODER.CORNER_OFFSET_STEP = 16.0


def validate_config(cfg: CfgNode) -> None:
    """Check the box-coder keys.

    Validated: NAME is registered (the error lists the coders); CORNER_OFFSET_STEP is one
    positive number or four; the corner coder is not combined with
    ``MODEL.ROI_HEADS.NAME = "SephCascadeROIHeads"``.

    Raises:
        ValueError: naming the offending keys and values.
    """
    # Imported here so the config package imports no model code at module level.
    from sephnet.modeling.roi_heads.predictor.box_coders import CornerOffsetBox2BoxTransform, build_box_coder

    node = cfg.MODEL.SEPH.BOX_CODER
    step = node.CORNER_OFFSET_STEP
    try:
        CornerOffsetBox2BoxTransform(step=step)
    except ValueError:
        raise ValueError(
            f"{_KEY}.CORNER_OFFSET_STEP={step!r}; expected a positive number or four positive "
            "numbers (x1, y1, x2, y2) in pixels."
        ) from None
    coder = build_box_coder(cfg)  # raises for an unregistered NAME
    if (
        isinstance(coder, CornerOffsetBox2BoxTransform)
        and cfg.MODEL.ROI_HEADS.NAME == "SephCascadeROIHeads"
    ):
        raise ValueError(
            f"{_KEY}.NAME={node.NAME!r} cannot be used with MODEL.ROI_HEADS.NAME="
            "'SephCascadeROIHeads': its stages use Box2BoxTransform with "
            "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS; use 'Box2BoxTransform'."
        )
