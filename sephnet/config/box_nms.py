"""Keys of the box head's test-time suppression: ``MODEL.SEPH.BOX_NMS.*``.

Soft-NMS, box voting and weighted boxes fusion (``sephnet.modeling.postprocessing``) in
place of detectron2's per-class NMS in the predictor's ``fast_rcnn_inference`` step. The
upstream keys keep their meaning: ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` (candidates),
``MODEL.ROI_HEADS.NMS_THRESH_TEST`` (NMS IoU, and linear soft-NMS's decay threshold),
``TEST.DETECTIONS_PER_IMAGE`` (top-k after the step).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.BOX_NMS"
# Mirrors sephnet.modeling.postprocessing.detection_nms; literal here so the config package
# imports no model code.
_METHODS = ("nms", "soft_linear", "soft_gaussian")
_FUSIONS = ("none", "voting", "wbf")


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.BOX_NMS.*``; the defaults are detectron2's per-class NMS."""
    cfg.MODEL.SEPH.BOX_NMS = CfgNode()
    node = cfg.MODEL.SEPH.BOX_NMS
    # Suppression of the box head's per-class candidates at test time:
    # "nms": detectron2's NMS (IoU > MODEL.ROI_HEADS.NMS_THRESH_TEST removes);
    # "soft_linear": soft-NMS, a box's score x (1 - IoU) when its IoU with a kept box of its
    #   class is > NMS_THRESH_TEST;
    # "soft_gaussian": soft-NMS, score x exp(-IoU^2 / SOFT_SIGMA) for every kept box.
    node.METHOD = "nms"
    # "soft_gaussian" only: the decay width sigma (> 0); 0.5 as in the soft-NMS paper.
    node.SOFT_SIGMA = 0.5
    # "soft_*" only: boxes whose decayed score falls below this are dropped (>= 0).
    node.SOFT_SCORE_THRESH = 0.001
    # After the suppression:
    # "none": nothing;
    # "voting": box voting: each kept box becomes the score-weighted mean of the candidates
    #   of its class whose IoU with it is >= FUSION_IOU_THRESH (its score stays), as the
    #   ImageNet leaderboard's "nms + box voting";
    # "wbf": weighted boxes fusion of the candidates instead of the suppression (METHOD must
    #   be "nms"): clusters of IoU > FUSION_IOU_THRESH, score-weighted mean boxes, mean scores.
    node.FUSION = "none"
    # IoU threshold of FUSION in [0, 1]: 0.5 for voting as on the leaderboard; WBF's authors
    # use 0.55.
    node.FUSION_IOU_THRESH = 0.5


def validate_config(cfg: CfgNode) -> None:
    """Reject unknown values and keys that would not act (non-default keys need a sephnet
    ROI head, whose predictor reads them)."""
    node = cfg.MODEL.SEPH.BOX_NMS
    if node.METHOD not in _METHODS:
        raise ValueError(f"{_KEY}.METHOD={node.METHOD!r}; expected one of {_METHODS}.")
    if node.FUSION not in _FUSIONS:
        raise ValueError(f"{_KEY}.FUSION={node.FUSION!r}; expected one of {_FUSIONS}.")
    if node.FUSION == "wbf" and node.METHOD != "nms":
        raise ValueError(
            f"{_KEY}.FUSION='wbf' replaces the suppression; {_KEY}.METHOD={node.METHOD!r} "
            "must be 'nms'."
        )
    if not node.SOFT_SIGMA > 0:
        raise ValueError(f"{_KEY}.SOFT_SIGMA={node.SOFT_SIGMA!r}; expected a number > 0.")
    if not node.SOFT_SCORE_THRESH >= 0:
        raise ValueError(
            f"{_KEY}.SOFT_SCORE_THRESH={node.SOFT_SCORE_THRESH!r}; expected a number >= 0."
        )
    if not 0.0 <= node.FUSION_IOU_THRESH <= 1.0:
        raise ValueError(
            f"{_KEY}.FUSION_IOU_THRESH={node.FUSION_IOU_THRESH!r}; expected a value in [0, 1]."
        )
    if node.METHOD == "nms" and node.FUSION == "none":
        return
    roi_heads = cfg.MODEL.ROI_HEADS.NAME
    if not roi_heads.startswith("Seph"):
        raise ValueError(
            f"{_KEY}.METHOD={node.METHOD!r} / FUSION={node.FUSION!r} act in sephnet's box "
            f"predictor; MODEL.ROI_HEADS.NAME={roi_heads!r} does not build it (use a Seph* "
            "ROI head)."
        )
    if cfg.MODEL.SEPH.IOU_BRANCH.ENABLED and cfg.MODEL.SEPH.IOU_BRANCH.TEST_SCORE == "rank":
        raise ValueError(
            f"{_KEY}.METHOD / FUSION other than plain NMS cannot be combined with "
            "MODEL.SEPH.IOU_BRANCH.TEST_SCORE='rank' (which ranks and suppresses by IoU)."
        )
