"""Keys of the size-expert box head: ``MODEL.SEPH.SIZE_EXPERT_HEAD.*``
(docs/components.md#box-heads).

Read only when ``MODEL.SEPH.BOX_HEAD.NAME`` is "SizeExpertHead" (log rows sephv14_20 with 512
ROIs, sephv14_20_1 with 128); its towers use ``MODEL.SEPH.BOX_HEAD.NUM_FC/FC_DIM/NUM_CONV/
CONV_DIM`` and ``MODEL.ROI_BOX_HEAD.NORM`` like FCClsConvBoxHead.
"""
from sephnet.backend import CfgNode
from sephnet.config._checks import check_int_at_least

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.SIZE_EXPERT_HEAD"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.SIZE_EXPERT_HEAD.*``."""
    node = cfg.MODEL.SEPH.SIZE_EXPERT_HEAD = CfgNode()
    # Number of experts E (int >= 1). Log: 4.
    node.NUM_EXPERTS = 4
    # Width of one expert's size bin, in pixels of sqrt(box area) (float > 0): expert =
    # clip(floor(sqrt(area) / SIZE_STEP), 0, E - 1). Log: 16 (the original's 4/64).
    node.SIZE_STEP = 16.0
    # True: the experts' shared linear maps (cls -> NUM_CLASSES + 1, box -> 4 * NUM_CLASSES,
    # or 4 with CLS_AGNOSTIC_BBOX_REG) run inside the head and the predictor's linear layers
    # run on top of them: two linear maps in a row, as the log's sephv14_20 configs ran
    # (docs/components.md#conventions, literal). False (sephnet's default): the predictor's layers
    # only.
    node.STACKED_LINEAR = False


def validate_config(cfg: CfgNode) -> None:
    """Check the keys (always) and that the head is used where it can get box sizes.

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.SIZE_EXPERT_HEAD
    n, step = node.NUM_EXPERTS, node.SIZE_STEP
    check_int_at_least(n, f"{_KEY}.NUM_EXPERTS", 1)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
        raise ValueError(f"{_KEY}.SIZE_STEP={step!r}; expected a number > 0 (pixels).")
    if cfg.MODEL.SEPH.BOX_HEAD.NAME != "SizeExpertHead":
        return
    box = cfg.MODEL.SEPH.BOX_HEAD
    if box.NUM_FC < 1 or box.NUM_CONV < 1:
        raise ValueError(
            f"SizeExpertHead needs MODEL.SEPH.BOX_HEAD.NUM_FC >= 1 and NUM_CONV >= 1; got "
            f"{box.NUM_FC} and {box.NUM_CONV}."
        )
    if cfg.MODEL.ROI_HEADS.NAME != "SephStandardROIHeads":
        raise ValueError(
            "MODEL.SEPH.BOX_HEAD.NAME='SizeExpertHead' needs the box sizes that "
            "SephStandardROIHeads passes; MODEL.ROI_HEADS.NAME="
            f"{cfg.MODEL.ROI_HEADS.NAME!r}."
        )
    for key, value in (("MODEL.SEPH.ROI_HOOK.NAME", cfg.MODEL.SEPH.ROI_HOOK.NAME),):
        if value:
            raise ValueError(f"SizeExpertHead takes no ROI hook; {key}={value!r} must be ''.")
    if cfg.MODEL.SEPH.MULTISCALE_POOLER.ENABLED:
        raise ValueError(
            "SizeExpertHead reads one crop; MODEL.SEPH.MULTISCALE_POOLER.ENABLED must be False."
        )
