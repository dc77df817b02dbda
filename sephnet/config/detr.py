"""Keys of the DETR meta-architecture: ``MODEL.SEPH.DETR.*`` (``MODEL.META_ARCHITECTURE:
SephDETR``; docs/detr.md).

Defaults are the paper's COCO recipe (ResNet-50, 6 + 6 layers of width 256, 100 queries,
matching costs and loss weights 1 / 5 / 2, "no object" weight 0.1, auxiliary losses).
The backbone is ``MODEL.BACKBONE.NAME`` (e.g. ``build_resnet_backbone`` with
``MODEL.RESNETS.OUT_FEATURES: ["res5"]``); the optimizer keys (AdamW, backbone learning-rate
factor) are ``MODEL.SEPH.SOLVER.OPTIMIZER`` / ``BACKBONE_LR_FACTOR``.
"""
from sephnet.backend import CfgNode
from sephnet.config._checks import check_int_at_least

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.DETR"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.DETR.*`` with the paper's values."""
    cfg.MODEL.SEPH.DETR = CfgNode()
    node = cfg.MODEL.SEPH.DETR
    # Number of foreground classes K (the class head has K + 1 outputs, the last being
    # "no object"); an int >= 1. COCO: 80.
    node.NUM_CLASSES = 80
    # Name of the backbone output the transformer reads (one stride), e.g. "res5"; it must
    # be one of the backbone's outputs (MODEL.RESNETS.OUT_FEATURES for a ResNet).
    node.IN_FEATURE = "res5"
    # Number of object queries Q: the most detections per image; an int >= 1.
    node.NUM_QUERIES = 100
    # Transformer width d (input projection, positional encoding, queries); an even int
    # divisible by NHEADS.
    node.HIDDEN_DIM = 256
    # Attention heads per attention layer; an int >= 1.
    node.NHEADS = 8
    # Hidden width of each transformer layer's feed-forward block; an int >= 1.
    node.DIM_FEEDFORWARD = 2048
    # Encoder layers (an int >= 0) and decoder layers (an int >= 1).
    node.ENC_LAYERS = 6
    node.DEC_LAYERS = 6
    # Dropout probability in every transformer layer, in [0, 1).
    node.DROPOUT = 0.1
    # Matching cost weights (Hungarian matching): -softmax probability of the target class,
    # L1 distance of the normalised cxcywh boxes, -GIoU. Numbers >= 0, not all 0.
    node.COST_CLASS = 1.0
    node.COST_BBOX = 5.0
    node.COST_GIOU = 2.0
    # Loss weights: cross-entropy (loss_cls), L1 of the matched boxes (loss_bbox) and
    # 1 - GIoU (loss_giou); numbers >= 0.
    node.CLASS_WEIGHT = 1.0
    node.L1_WEIGHT = 5.0
    node.GIOU_WEIGHT = 2.0
    # Weight of the "no object" class in the cross-entropy relative to the K classes
    # (the paper's eos_coef), in (0, 1].
    node.NO_OBJECT_WEIGHT = 0.1
    # True: also apply the set loss to every earlier decoder layer's predictions
    # (auxiliary losses, named <loss>_<layer>); False: the last layer only.
    node.DEEP_SUPERVISION = True


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def validate_config(cfg: CfgNode) -> None:
    """Check the DETR keys (whatever the meta-architecture: a wrong default is an error too).

    Raises:
        ValueError: naming the key and the value, or the conflicting keys.
    """
    node = cfg.MODEL.SEPH.DETR
    for key, minimum in (
        ("NUM_CLASSES", 1), ("NUM_QUERIES", 1), ("HIDDEN_DIM", 2), ("NHEADS", 1),
        ("DIM_FEEDFORWARD", 1), ("ENC_LAYERS", 0), ("DEC_LAYERS", 1),
    ):
        check_int_at_least(node[key], f"{_KEY}.{key}", minimum)
    if node.HIDDEN_DIM % 2 or node.HIDDEN_DIM % node.NHEADS:
        raise ValueError(
            f"{_KEY}.HIDDEN_DIM={node.HIDDEN_DIM}; expected an even number divisible by "
            f"{_KEY}.NHEADS={node.NHEADS}."
        )
    if not _is_number(node.DROPOUT) or not 0 <= node.DROPOUT < 1:
        raise ValueError(f"{_KEY}.DROPOUT={node.DROPOUT!r}; expected a number in [0, 1).")
    for key in ("COST_CLASS", "COST_BBOX", "COST_GIOU", "CLASS_WEIGHT", "L1_WEIGHT", "GIOU_WEIGHT"):
        if not _is_number(node[key]) or node[key] < 0:
            raise ValueError(f"{_KEY}.{key}={node[key]!r}; expected a number >= 0.")
    if node.COST_CLASS == node.COST_BBOX == node.COST_GIOU == 0:
        raise ValueError(f"{_KEY}.COST_CLASS/COST_BBOX/COST_GIOU are all 0; the matching needs a cost.")
    if not _is_number(node.NO_OBJECT_WEIGHT) or not 0 < node.NO_OBJECT_WEIGHT <= 1:
        raise ValueError(f"{_KEY}.NO_OBJECT_WEIGHT={node.NO_OBJECT_WEIGHT!r}; expected a number in (0, 1].")
    if not isinstance(node.DEEP_SUPERVISION, bool):
        raise ValueError(f"{_KEY}.DEEP_SUPERVISION={node.DEEP_SUPERVISION!r}; expected True or False.")
    if not isinstance(node.IN_FEATURE, str) or not node.IN_FEATURE:
        raise ValueError(f"{_KEY}.IN_FEATURE={node.IN_FEATURE!r}; expected a backbone output name.")
    if cfg.MODEL.META_ARCHITECTURE != "SephDETR":
        return
    if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
        raise ValueError("MODEL.META_ARCHITECTURE=SephDETR detects boxes only; set MODEL.MASK_ON and KEYPOINT_ON False.")
    if cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone" and node.IN_FEATURE not in cfg.MODEL.RESNETS.OUT_FEATURES:
        raise ValueError(
            f"{_KEY}.IN_FEATURE={node.IN_FEATURE!r} is not in MODEL.RESNETS.OUT_FEATURES="
            f"{list(cfg.MODEL.RESNETS.OUT_FEATURES)}."
        )
    if cfg.TEST.DETECTIONS_PER_IMAGE < 1:
        raise ValueError(f"TEST.DETECTIONS_PER_IMAGE={cfg.TEST.DETECTIONS_PER_IMAGE}; SephDETR needs >= 1.")
