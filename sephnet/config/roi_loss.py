"""Keys of the ROI box predictor's imbalance and box-regression losses: ``MODEL.SEPH.ROI_LOSS.*``.

The survey's tricks, none of them a row of the experiment log. The defaults keep
detectron2's losses (softmax cross-entropy; the box loss of
``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE``, whose upstream values "smooth_l1", "giou",
"diou" and "ciou" are used with detectron2's meaning). Read by ``SephOutputLayers``; see
``sephnet/modeling/losses/``.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.ROI_LOSS"

# Mirrors sephnet.modeling.losses.roi_losses (kept literal: the config package imports no
# model code at module level); tests/config/test_roi_loss.py checks that they agree.
_CLS_TYPES = ("cross_entropy", "focal", "ghm_c")
_BOX_TYPES = ("upstream", "iou", "balanced_l1", "ghm_r")

# Keys read only by some loss types: (key, the types that read it, which selector).
_TYPE_SPECIFIC = (
    ("FOCAL_GAMMA", ("focal",), "CLS_TYPE"),
    ("LABEL_SMOOTHING", ("cross_entropy",), "CLS_TYPE"),
    ("BALANCED_L1_ALPHA", ("balanced_l1",), "BOX_TYPE"),
    ("BALANCED_L1_GAMMA", ("balanced_l1",), "BOX_TYPE"),
    ("BALANCED_L1_BETA", ("balanced_l1",), "BOX_TYPE"),
    ("GHM_R_MU", ("ghm_r",), "BOX_TYPE"),
)


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.ROI_LOSS.*`` (defaults: detectron2's losses)."""
    node = cfg.MODEL.SEPH.ROI_LOSS = CfgNode()
    # Per-ROI classification loss, averaged over the sampled ROIs (times
    # MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING's weights, if any): "cross_entropy"
    # (detectron2's softmax loss), "focal" (softmax focal loss -(1-p_t)^FOCAL_GAMMA log p_t)
    # or "ghm_c" (cross-entropy reweighted by the inverse density of g = 1 - p_t, GHM_BINS
    # bins).
    node.CLS_TYPE = "cross_entropy"
    # "cross_entropy" only: label smoothing eps in [0, 1); the target is
    # (1 - eps) one-hot + eps / (K+1). 0 = off. A common choice: 0.1.
    node.LABEL_SMOOTHING = 0.0
    # "focal" only: the focusing parameter gamma >= 0 (2 in the focal-loss paper).
    node.FOCAL_GAMMA = 2.0
    # Box-regression loss of the foreground ROIs (sum over them / #ROIs, times
    # MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT): "upstream" = MODEL.ROI_BOX_HEAD.
    # BBOX_REG_LOSS_TYPE decides (smooth_l1 / giou / diou / ciou, detectron2's names);
    # sephnet-only: "iou" (1 - IoU of the decoded box), "balanced_l1" (Libra R-CNN, on the
    # box deltas), "ghm_r" (GHM-R: ASL1 of the deltas reweighted by gradient density).
    # Others than "upstream" need BBOX_REG_LOSS_TYPE at its default "smooth_l1".
    node.BOX_TYPE = "upstream"
    # "balanced_l1" only: alpha, gamma, beta > 0 (Libra R-CNN: 0.5, 1.5, 1.0).
    node.BALANCED_L1_ALPHA = 0.5
    node.BALANCED_L1_GAMMA = 1.5
    node.BALANCED_L1_BETA = 1.0
    # "ghm_r" only: mu > 0 of ASL1 sqrt(d^2 + mu^2) - mu (0.02 in the GHM paper).
    node.GHM_R_MU = 0.02
    # "ghm_c" / "ghm_r": number of gradient-norm bins over [0, 1] (an int >= 1; 10 in the
    # paper) and the momentum in [0, 1) of the bin counts across iterations (0 = the
    # current batch only; 0.75 in the paper). Each loss keeps its own counts.
    node.GHM_BINS = 10
    node.GHM_MOMENTUM = 0.0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(cfg: CfgNode) -> None:
    """Check the ROI-loss keys.

    Validated: CLS_TYPE / BOX_TYPE are known; LABEL_SMOOTHING in [0, 1); FOCAL_GAMMA >= 0;
    the Balanced L1 parameters and GHM_R_MU > 0; GHM_BINS an int >= 1; GHM_MOMENTUM in
    [0, 1); a type-specific key differs from its default only when its type is selected
    (GHM_BINS / GHM_MOMENTUM: when a GHM loss is); a BOX_TYPE other than "upstream" comes with
    MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE "smooth_l1" and MODEL.SEPH.PREDICTOR.
    BOX_LOSS_WEIGHTING "none"; any non-default loss needs MODEL.SEPH.PREDICTOR.NAME
    "SephOutputLayers" inside a Seph ROI head (detectron2's predictor would ignore it).

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.ROI_LOSS
    if node.CLS_TYPE not in _CLS_TYPES:
        raise ValueError(f"{_KEY}.CLS_TYPE={node.CLS_TYPE!r}; expected one of {_CLS_TYPES}.")
    if node.BOX_TYPE not in _BOX_TYPES:
        raise ValueError(f"{_KEY}.BOX_TYPE={node.BOX_TYPE!r}; expected one of {_BOX_TYPES}.")
    if not (_number(node.LABEL_SMOOTHING) and 0 <= node.LABEL_SMOOTHING < 1):
        raise ValueError(
            f"{_KEY}.LABEL_SMOOTHING={node.LABEL_SMOOTHING!r}; expected a number in [0, 1)."
        )
    if not (_number(node.FOCAL_GAMMA) and node.FOCAL_GAMMA >= 0):
        raise ValueError(f"{_KEY}.FOCAL_GAMMA={node.FOCAL_GAMMA!r}; expected a number >= 0.")
    for key in ("BALANCED_L1_ALPHA", "BALANCED_L1_GAMMA", "BALANCED_L1_BETA", "GHM_R_MU"):
        if not (_number(node[key]) and node[key] > 0):
            raise ValueError(f"{_KEY}.{key}={node[key]!r}; expected a number > 0.")
    bins = node.GHM_BINS
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"{_KEY}.GHM_BINS={bins!r}; expected an int >= 1.")
    if not (_number(node.GHM_MOMENTUM) and 0 <= node.GHM_MOMENTUM < 1):
        raise ValueError(f"{_KEY}.GHM_MOMENTUM={node.GHM_MOMENTUM!r}; expected a number in [0, 1).")

    defaults = CfgNode()
    defaults.MODEL = CfgNode()
    defaults.MODEL.SEPH = CfgNode()
    add_config(defaults)
    default = defaults.MODEL.SEPH.ROI_LOSS
    uses_ghm = node.CLS_TYPE == "ghm_c" or node.BOX_TYPE == "ghm_r"
    specific = _TYPE_SPECIFIC + (
        ("GHM_BINS", ("ghm",), "GHM"),
        ("GHM_MOMENTUM", ("ghm",), "GHM"),
    )
    for key, types, selector in specific:
        selected = uses_ghm if selector == "GHM" else node[selector] in types
        if not selected and node[key] != default[key]:
            what = (
                "a GHM loss (CLS_TYPE 'ghm_c' or BOX_TYPE 'ghm_r')"
                if selector == "GHM"
                else f"{_KEY}.{selector} in {types}"
            )
            raise ValueError(
                f"{_KEY}.{key}={node[key]!r} is only read with {what}; got CLS_TYPE="
                f"{node.CLS_TYPE!r}, BOX_TYPE={node.BOX_TYPE!r}."
            )

    loss_type = cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE
    if node.BOX_TYPE != "upstream":
        if loss_type != "smooth_l1":
            raise ValueError(
                f"{_KEY}.BOX_TYPE={node.BOX_TYPE!r} and MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE="
                f"{loss_type!r} both choose the box loss; leave BBOX_REG_LOSS_TYPE 'smooth_l1' "
                "or set BOX_TYPE 'upstream'."
            )
        weighting = cfg.MODEL.SEPH.PREDICTOR.BOX_LOSS_WEIGHTING
        if weighting != "none":
            raise ValueError(
                f"{_KEY}.BOX_TYPE={node.BOX_TYPE!r} cannot be combined with "
                f"MODEL.SEPH.PREDICTOR.BOX_LOSS_WEIGHTING={weighting!r} (it weights the GIoU loss)."
            )
    changed = (
        node.CLS_TYPE != "cross_entropy" or node.LABEL_SMOOTHING > 0 or node.BOX_TYPE != "upstream"
    )
    roi_heads, predictor = cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.SEPH.PREDICTOR.NAME
    if changed and (not roi_heads.startswith("Seph") or predictor != "SephOutputLayers"):
        raise ValueError(
            f"{_KEY}.CLS_TYPE={node.CLS_TYPE!r}, LABEL_SMOOTHING={node.LABEL_SMOOTHING!r}, "
            f"BOX_TYPE={node.BOX_TYPE!r} are computed by SephOutputLayers inside a Seph ROI head; "
            f"got MODEL.ROI_HEADS.NAME={roi_heads!r}, MODEL.SEPH.PREDICTOR.NAME={predictor!r}."
        )
