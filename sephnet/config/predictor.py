"""Keys of the box predictor (``MODEL.SEPH.PREDICTOR.*``) and its IoU branch (``.IOU_BRANCH.*``).

docs/components.md#predictor-and-losses. Upstream keys the predictor reuses with their
upstream meaning: ``MODEL.ROI_HEADS.NUM_CLASSES / SCORE_THRESH_TEST / NMS_THRESH_TEST``,
``TEST.DETECTIONS_PER_IMAGE``, ``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS / SMOOTH_L1_BETA /
CLS_AGNOSTIC_BBOX_REG`` and ``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE / BBOX_REG_LOSS_WEIGHT``
(the log's "GIOUoutputs" = ``"giou"``; its ``BOX_REG_LOSS_SCALE`` multiplier = the weight:
4 for sephv15, 8 for sephv15_1 / sephv21 / sephv24 / sephNv15, 12 for sephv15_2).
"""

from sephnet.backend import CfgNode
from sephnet.layers.losses import BOX_REG_LOSS_TYPES, CLS_LOSS_WEIGHTINGS

__all__ = ["add_config", "validate_config"]

_PRED = "MODEL.SEPH.PREDICTOR"
_IOU = "MODEL.SEPH.IOU_BRANCH"



def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.PREDICTOR.*`` and ``MODEL.SEPH.IOU_BRANCH.*``.

    The defaults give detectron2's predictor (linear classes, no IoU branch, no weighting).
    """
    cfg.MODEL.SEPH.PREDICTOR = CfgNode()
    # Predictor class, a name in SEPH_BOX_PREDICTOR_REGISTRY, built by SephStandardROIHeads
    # as cls(cfg, output_shapes). "SephOutputLayers": linear or cosine classes, box deltas,
    # optional IoU branch (every log row).
    cfg.MODEL.SEPH.PREDICTOR.NAME = "SephOutputLayers"
    # Class-logit layer: "linear" (detectron2's nn.Linear to K+1 logits; every log row) or
    # "cosine" (scale * cosine similarity of L2-normalised feature and class weights, the
    # background column included; docs/components.md#predictor-and-losses, the "_cos" configs - not
    # a log row).
    cfg.MODEL.SEPH.PREDICTOR.CLS_LAYER = "linear"
    # "cosine" only: the logit scale (inverse temperature), a number > 0. 20 as in TFA.
    cfg.MODEL.SEPH.PREDICTOR.COSINE_SCALE = 20.0
    # "cosine" only: learn the scale (initialised to COSINE_SCALE) instead of fixing it.
    cfg.MODEL.SEPH.PREDICTOR.COSINE_SCALE_LEARNABLE = False
    # Multiplier of loss_cls (the original's BOX_CLS_LOSS_SCALE): 1 everywhere, 2 in sephv9.
    # A number >= 0.
    cfg.MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHT = 1.0
    # Per-ROI weight of the softmax loss from the ROI's IoU s with its matched gt, loss =
    # sum_i w_i CE_i / R (mean over all ROIs, docs/components.md#predictor-and-losses). "none": w =
    # 1 (all rows before Aug 2020, "4)", "4)+GIOUoutputs+no cls loss weight"); "square": w = min(1,
    # 100 (s-0.5)^2)
    # ("cls loss weight": sephv14 and everything derived, sephv15*, recipes 4-9); "linear":
    # w = 4 |s-0.5| ("class loss linear scalar": recipe "3)").
    cfg.MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING = "none"
    # IoU in [0, 1); 0 = off. When > 0, ROIs whose IoU with their matched gt is <= this are
    # classified as background although the ROI matcher made them foreground; box
    # regression (and the mask head) still use the matcher's foreground. 0.5 in sephv3/4/5,
    # recipe "3)" and sephv21 (the latter two with MODEL.ROI_HEADS.IOU_THRESHOLDS [0.3]).
    cfg.MODEL.SEPH.PREDICTOR.POS_LABELS_THRESHOLD = 0.0
    # Per-ROI weight of the box loss: "none" (detectron2; every log row) or "proposal_iou":
    # w = 1 if the ROI's IoU s with its matched gt > 0.5 else s, on the GIoU loss (the
    # original's "WeightGIOU" outputs: sephv3/4/5 and recipe "3)", there with
    # BBOX_REG_LOSS_WEIGHT 6). Needs MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE "giou".
    cfg.MODEL.SEPH.PREDICTOR.BOX_LOSS_WEIGHTING = "none"
    # Detections per ROI at test time: "all" = detectron2's fast_rcnn_inference (every
    # class above SCORE_THRESH_TEST; docs/components.md#conventions, the default) or "top1" = only
    # the highest-scoring foreground class of each ROI (the original, docs/components.md#inference).
    cfg.MODEL.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST = "all"

    cfg.MODEL.SEPH.IOU_BRANCH = CfgNode()
    # Add the IoU-prediction branch (one output per ROI, loss key loss_iou) to the predictor;
    # box heads with an IoU tower build it when this is on. "pred iou*", iou1-7, sephv3/4/5/8,
    # sephv14_6, sephv27 rows. A head without an IoU tower feeds its box features instead.
    cfg.MODEL.SEPH.IOU_BRANCH.ENABLED = False
    # Target/loss version, docs/components.md#iou-branch: 0 = proposal IoU, FL-BCE on all ROIs
    # (iou1, iou2, sephv5); 1 = GIoU of the decoded box on fg + NEG_WEIGHT * bg term ("pred iou1",
    # sephv3/4/4_1/8); 3 = proposal centerness on fg ("pred centerness", sephv14_6);
    # 4 = version 0 on ROIs with IoU > 0.4 or prediction >= 0.45 (iou4-6, sephv27);
    # 5 = version 4 with a raw output and L1 loss (iou7). (There is no version 2.)
    cfg.MODEL.SEPH.IOU_BRANCH.VERSION = 0
    # Multiplier of loss_iou, a number >= 0 (1 in every row).
    cfg.MODEL.SEPH.IOU_BRANCH.LOSS_WEIGHT = 1.0
    # Version 1 only: weight of the background term, >= 0. 0.5 at HEAD; 0.3 in the 07-30
    # code behind the "sephv2+cosine+EvoNormS head+pred iou1" row.
    cfg.MODEL.SEPH.IOU_BRANCH.NEG_WEIGHT = 0.5
    # How the predicted IoU q (sigmoid of the output; clip to [0, 1] for version 5) enters
    # the test score: "by_version" (the original's rule: "multiply" for VERSION 3, the
    # "pred centerness" row; "off" for every other version, all iou* rows), "off" (ignored),
    # "multiply" (class probabilities * q before thresholding/NMS: also the 07-27..08-14
    # "pred iou1" row), "rank" (candidates ranked and NMS-ed by q while the reported score
    # stays the class probability: the original's USE_IOU_IN_TEST).
    cfg.MODEL.SEPH.IOU_BRANCH.TEST_SCORE = "by_version"


def _check_number(value, key: str, *, low: float, low_inclusive: bool, high: float = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = value >= low if low_inclusive else value > low
        if high is not None:
            ok = ok and value < high
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (
            f" and < {high}" if high is not None else ""
        )
        raise ValueError(f"{key}={value!r}; expected a number {bound}.")


def _check_choice(value, key: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r}; expected one of {', '.join(repr(c) for c in choices)}.")


def validate_config(cfg: CfgNode) -> None:
    """Check the predictor and IoU-branch keys.

    Validated: NAME is registered (the error lists the names) and supports the IoU branch
    when it is on; every choice key holds an allowed value; COSINE_SCALE > 0; loss weights
    >= 0; POS_LABELS_THRESHOLD in [0, 1); ``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE`` is one
    of smooth_l1 / giou / diou / ciou (detectron2 only checks it at the first loss);
    ``IOU_BRANCH.TEST_SCORE`` other than "by_version" / "off" needs ``IOU_BRANCH.ENABLED``;
    ``BOX_LOSS_WEIGHTING`` other than "none" needs the "giou" loss type.
    Deliberately allowed: an IoU branch with a box head that has no IoU tower (the branch
    reads the box features).

    Raises:
        ValueError: naming the offending keys and values.
    """
    # The choice lists live with the code that uses them; imported here because the
    # config package imports no model code at module level (importing box_predictor also
    # registers SephOutputLayers).
    from sephnet.modeling.roi_heads.predictor.box_predictor import (
        BOX_LOSS_WEIGHTINGS,
        CLASSES_PER_ROI,
        CLS_LAYERS,
    )
    from sephnet.modeling.roi_heads.predictor.iou_branch import IOU_BRANCH_VERSIONS, IOU_TEST_SCORES

    pred, iou = cfg.MODEL.SEPH.PREDICTOR, cfg.MODEL.SEPH.IOU_BRANCH
    _check_choice(pred.CLS_LAYER, f"{_PRED}.CLS_LAYER", CLS_LAYERS)
    _check_number(pred.COSINE_SCALE, f"{_PRED}.COSINE_SCALE", low=0.0, low_inclusive=False)
    _check_number(pred.CLS_LOSS_WEIGHT, f"{_PRED}.CLS_LOSS_WEIGHT", low=0.0, low_inclusive=True)
    _check_choice(pred.CLS_LOSS_WEIGHTING, f"{_PRED}.CLS_LOSS_WEIGHTING", CLS_LOSS_WEIGHTINGS)
    _check_number(
        pred.POS_LABELS_THRESHOLD,
        f"{_PRED}.POS_LABELS_THRESHOLD",
        low=0.0,
        low_inclusive=True,
        high=1.0,
    )
    _check_choice(pred.BOX_LOSS_WEIGHTING, f"{_PRED}.BOX_LOSS_WEIGHTING", BOX_LOSS_WEIGHTINGS)
    loss_type = cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE
    if pred.BOX_LOSS_WEIGHTING != "none" and loss_type != "giou":
        raise ValueError(
            f"{_PRED}.BOX_LOSS_WEIGHTING={pred.BOX_LOSS_WEIGHTING!r} weights the GIoU loss; it "
            f"needs MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE='giou', got {loss_type!r}."
        )
    _check_choice(pred.CLASSES_PER_ROI_TEST, f"{_PRED}.CLASSES_PER_ROI_TEST", CLASSES_PER_ROI)
    _check_choice(
        cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE,
        "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE",
        BOX_REG_LOSS_TYPES,
    )
    _check_choice(iou.VERSION, f"{_IOU}.VERSION", IOU_BRANCH_VERSIONS)
    _check_number(iou.LOSS_WEIGHT, f"{_IOU}.LOSS_WEIGHT", low=0.0, low_inclusive=True)
    _check_number(iou.NEG_WEIGHT, f"{_IOU}.NEG_WEIGHT", low=0.0, low_inclusive=True)
    _check_choice(iou.TEST_SCORE, f"{_IOU}.TEST_SCORE", IOU_TEST_SCORES)
    if iou.TEST_SCORE not in ("by_version", "off") and not iou.ENABLED:
        raise ValueError(
            f"{_IOU}.TEST_SCORE={iou.TEST_SCORE!r} needs {_IOU}.ENABLED=True (there is no "
            "predicted IoU to use at test time); set TEST_SCORE 'off' or enable the branch."
        )

    from sephnet.modeling.registry import SEPH_BOX_PREDICTOR_REGISTRY, get_registered

    predictor = get_registered(SEPH_BOX_PREDICTOR_REGISTRY, pred.NAME, f"{_PRED}.NAME")
    if iou.ENABLED and not getattr(predictor, "supports_iou_branch", False):
        raise ValueError(
            f"{_IOU}.ENABLED=True but {_PRED}.NAME={pred.NAME!r} has no IoU branch; use "
            "'SephOutputLayers' or disable the branch."
        )
