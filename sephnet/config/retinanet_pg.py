"""Keys of the RetinaNet-style proposal generator ``SephRetinaNetPG`` (sephv9,
docs/components.md#retinanet-proposal-generator).

Selected by ``MODEL.PROPOSAL_GENERATOR.NAME: "SephRetinaNetPG"``. It reuses upstream keys with
their upstream meaning:

* inputs and training proposals as detectron2's RPN: ``MODEL.RPN.IN_FEATURES``,
  ``PRE_NMS_TOPK_TRAIN``, ``POST_NMS_TOPK_TRAIN``, ``NMS_THRESH``,
  ``MODEL.PROPOSAL_GENERATOR.MIN_SIZE``; loss weights ``MODEL.RPN.LOSS_WEIGHT`` and
  ``BBOX_REG_LOSS_WEIGHT`` (loss keys ``loss_rpn_cls`` / ``loss_rpn_loc``, as the RPN's);
* the head, matching, losses and test-time selection as detectron2's RetinaNet:
  ``MODEL.RETINANET.NUM_CONVS`` (sephv9: 1), ``PRIOR_PROB``, ``IOU_THRESHOLDS`` / ``IOU_LABELS``
  ([0.4, 0.5] / [0, -1, 1], low-quality matches allowed), ``FOCAL_LOSS_ALPHA / GAMMA``
  (0.25 / 2), ``BBOX_REG_WEIGHTS`` (1, 1, 1, 1), ``BBOX_REG_LOSS_TYPE`` (sephv9: "giou"),
  ``SMOOTH_L1_LOSS_BETA``, ``SCORE_THRESH_TEST`` (0.05), ``TOPK_CANDIDATES_TEST`` (1000),
  ``NMS_THRESH_TEST`` (0.5); ``MODEL.RETINANET.NUM_CLASSES`` is not read (one class);
* ``TEST.DETECTIONS_PER_IMAGE`` (100): test-time proposals per image, as in the original
  (the same key bounds the ROI heads' detections).

The towers' norm is per level, which upstream's ``MODEL.RETINANET.NORM`` (one norm shared
by all levels) does not mean, hence the key below.
"""
from sephnet.backend import CfgNode
from sephnet.layers.losses import BOX_REG_LOSS_TYPES

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.RETINANET_PG"
_NAME = "SephRetinaNetPG"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.RETINANET_PG.*`` (defaults: no norm, ReLU towers)."""
    cfg.MODEL.SEPH.RETINANET_PG = CfgNode()
    # Norm after every tower conv of SephRetinaNetPG, with separate parameters per level
    # (a NORM value: "" = none with conv bias and ReLU; "GN", "BN", ... ; "EvoNormS0" =
    # EvoNorm with no activation after it, as in sephv9). Groups/eps of EvoNormS0 come from
    # MODEL.SEPH.EVONORM.
    cfg.MODEL.SEPH.RETINANET_PG.NORM = ""


def validate_config(cfg: CfgNode) -> None:
    """Check the keys ``SephRetinaNetPG`` reads.

    Validated: NORM is a known norm name; ``MODEL.SEPH.RETINANET_PG.NORM`` is set only with
    ``MODEL.PROPOSAL_GENERATOR.NAME == "SephRetinaNetPG"``; with it selected,
    ``MODEL.RETINANET.NUM_CONVS`` is an int >= 0, ``IOU_THRESHOLDS`` has one entry fewer than
    ``IOU_LABELS`` (values in {-1, 0, 1}), ``BBOX_REG_LOSS_TYPE`` is supported,
    ``PRIOR_PROB`` is in (0, 1), and ``MODEL.ANCHOR_GENERATOR.SIZES`` has one entry or one per
    ``MODEL.RPN.IN_FEATURES``.

    Raises:
        ValueError: naming the offending keys and values.
    """
    from sephnet.layers.norm import valid_norm_names

    norm = cfg.MODEL.SEPH.RETINANET_PG.NORM
    names = valid_norm_names()
    if norm not in names:
        raise ValueError(f"{_KEY}.NORM={norm!r}; expected one of {names}.")
    generator = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if generator != _NAME:
        if norm:
            raise ValueError(
                f"{_KEY}.NORM={norm!r} is read only by MODEL.PROPOSAL_GENERATOR.NAME="
                f"'{_NAME}', got {generator!r}."
            )
        return
    retina = cfg.MODEL.RETINANET
    if isinstance(retina.NUM_CONVS, bool) or not isinstance(retina.NUM_CONVS, int) or (
        retina.NUM_CONVS < 0
    ):
        raise ValueError(f"MODEL.RETINANET.NUM_CONVS={retina.NUM_CONVS!r}; expected an int >= 0.")
    thresholds, labels = list(retina.IOU_THRESHOLDS), list(retina.IOU_LABELS)
    if len(labels) != len(thresholds) + 1 or not set(labels) <= {-1, 0, 1}:
        raise ValueError(
            f"MODEL.RETINANET.IOU_THRESHOLDS={thresholds} and IOU_LABELS={labels}: expected one "
            "label more than thresholds, each in {-1, 0, 1}."
        )
    if retina.BBOX_REG_LOSS_TYPE not in BOX_REG_LOSS_TYPES:
        raise ValueError(
            f"MODEL.RETINANET.BBOX_REG_LOSS_TYPE={retina.BBOX_REG_LOSS_TYPE!r}; expected one of "
            f"{BOX_REG_LOSS_TYPES}."
        )
    if not 0.0 < retina.PRIOR_PROB < 1.0:
        raise ValueError(f"MODEL.RETINANET.PRIOR_PROB={retina.PRIOR_PROB!r}; expected (0, 1).")
    sizes, features = list(cfg.MODEL.ANCHOR_GENERATOR.SIZES), list(cfg.MODEL.RPN.IN_FEATURES)
    if len(sizes) not in (1, len(features)):
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.SIZES has {len(sizes)} entries for MODEL.RPN.IN_FEATURES="
            f"{features}; expected 1 or {len(features)}."
        )
