"""Keys of the SSD detector ``SephSSD``: ``MODEL.SEPH.SSD.*`` (docs/ssd.md).

Selected by ``MODEL.META_ARCHITECTURE: "SephSSD"`` with ``MODEL.BACKBONE.NAME:
"build_seph_ssd_backbone"`` (a base network plus SSD's extra layers). Defaults are SSD300's
on COCO (mmdetection's ``ssd300_coco``): VGG16 base, four extra layers, six levels of priors.
detectron2 keys read with their meaning: ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``,
``TEST.DETECTIONS_PER_IMAGE`` (the paper's 200), and for the training augmentation
``INPUT.FORMAT`` and ``INPUT.RANDOM_FLIP``; the photometric distortion's amounts are
``MODEL.SEPH.AUGMENT.PHOTOMETRIC.*``.
"""
from sephnet.backend import CfgNode

from ._checks import check_int_at_least, component_defaults, non_default_keys

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.SSD"
_META_ARCH = "SephSSD"
_BACKBONE = "build_seph_ssd_backbone"
# feature maps of the bases whose count is known from the config alone
_VGG = "build_seph_vgg16_backbone"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.SSD.*`` with SSD300-on-COCO defaults."""
    cfg.MODEL.SEPH.SSD = CfgNode()
    ssd = cfg.MODEL.SEPH.SSD
    # Number of foreground classes K (the head predicts K + 1 scores, background last).
    ssd.NUM_CLASSES = 80
    # Side S in pixels of the square the network sees (300 for SSD300, 512 for SSD512): every
    # image is resized to S x S (aspect ratio not kept) and boxes scale with it.
    ssd.INPUT_SIZE = 300
    # BACKBONE_REGISTRY name of the base network under the extra layers:
    # "build_seph_vgg16_backbone" (outputs conv4_3, fc7; MODEL.SEPH.VGG.*) or
    # "build_resnet_backbone" (outputs MODEL.RESNETS.OUT_FEATURES).
    ssd.BASE_BACKBONE = _VGG
    # Extra feature layers after the base's last output, one entry per layer in each list:
    # output channels (its 1x1 conv has half as many), and the stride, kernel size and
    # padding of its second conv. SSD300: 19 -> 10 -> 5 -> 3 -> 1.
    ssd.EXTRA_CHANNELS = [512, 256, 256, 256]
    ssd.EXTRA_STRIDES = [2, 2, 1, 1]
    ssd.EXTRA_KERNEL_SIZES = [3, 3, 3, 3]
    ssd.EXTRA_PADDINGS = [1, 1, 0, 0]
    # Norm after every conv of the extra layers ("" = none, as in the paper; "GN", "BN", ...).
    ssd.EXTRA_NORM = ""
    # Priors, one entry per feature map (base outputs, then extra layers), in input pixels:
    # side of the small square (s_k * S) and of the next level's (s_{k+1} * S); the extra
    # square has side sqrt(min * max). COCO SSD300: 21, 45, 99, 153, 207, 261 / 45, ..., 315.
    ssd.PRIOR_MIN_SIZES = [21.0, 45.0, 99.0, 153.0, 207.0, 261.0]
    ssd.PRIOR_MAX_SIZES = [45.0, 99.0, 153.0, 207.0, 261.0, 315.0]
    # Aspect ratios r (> 0, != 1) per level; each adds a w:h = r:1 and a 1:r box
    # ([2] gives 4 priors per location, [2, 3] gives 6).
    ssd.PRIOR_ASPECT_RATIOS = [[2.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0], [2.0], [2.0]]
    # Distance in input pixels between prior centres, per level (SSD300: 8, 16, 32, 64, 100, 300).
    ssd.PRIOR_STRIDES = [8.0, 16.0, 32.0, 64.0, 100.0, 300.0]
    # Centres at (index + PRIOR_OFFSET) * stride, in [0, 1).
    ssd.PRIOR_OFFSET = 0.5
    # Clip priors to the S x S input (True) or keep them crossing its border (False, mmdetection).
    ssd.PRIOR_CLIP = False
    # Box2BoxTransform weights (wx, wy, ww, wh) of the regression targets: (10, 10, 5, 5) are
    # SSD's variances 0.1 (centre) and 0.2 (size).
    ssd.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # A prior is positive when its IoU with a ground truth is >= this (besides each ground
    # truth's best prior, which is always positive), in (0, 1].
    ssd.IOU_THRESHOLD = 0.5
    # Hard negative mining: negatives kept per positive, by classification loss (> 0).
    ssd.NEG_POS_RATIO = 3.0
    # Beta of the smooth L1 box loss (>= 0; 0 = L1).
    ssd.SMOOTH_L1_BETA = 1.0
    # Inference: minimum class probability of a detection, in [0, 1).
    ssd.SCORE_THRESH_TEST = 0.02
    # Inference: (prior, class) candidates kept before NMS, best first (an int >= 1).
    ssd.TOPK_CANDIDATES_TEST = 1000
    # Inference: IoU threshold of the per-class NMS, in (0, 1].
    ssd.NMS_THRESH_TEST = 0.45

    ssd.AUGMENT = CfgNode()
    # Train with SSD's augmentation pipeline instead of detectron2's INPUT resize:
    # photometric distortion (with MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB > 0) -> expand -> min-IoU
    # random crop -> resize to INPUT_SIZE x INPUT_SIZE -> flip (INPUT.RANDOM_FLIP). Boxes whose
    # centre leaves the crop are dropped. Works with any meta-architecture's box training.
    ssd.AUGMENT.ENABLED = False
    # Probability (in [0, 1]) of "zoom out": the image is placed at a random position on a
    # canvas r times its size filled with MODEL.PIXEL_MEAN, r ~ U(1, EXPAND_MAX_RATIO).
    ssd.AUGMENT.EXPAND_PROB = 0.5
    # Largest zoom-out factor (>= 1; the paper's 16x area is 4).
    ssd.AUGMENT.EXPAND_MAX_RATIO = 4.0
    # Random crop: one of "no crop", these minimum IoUs (a patch whose IoU with every box is at
    # least the value) and "any patch" is drawn uniformly; each value in [0, 1].
    ssd.AUGMENT.CROP_MIN_IOUS = [0.1, 0.3, 0.5, 0.7, 0.9]
    # Smallest crop side as a fraction of the image side, in (0, 1] (mmdetection: 0.3).
    ssd.AUGMENT.CROP_MIN_SIZE = 0.3


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_numbers(values, key: str, low: float, high: float, *, open_low: bool = False) -> None:
    values = list(values)
    ok = all(_is_number(v) and (v > low if open_low else v >= low) and v <= high for v in values)
    if not ok:
        bound = "(" if open_low else "["
        raise ValueError(f"{_KEY}.{key}={values!r}; expected numbers in {bound}{low}, {high}].")


def validate_config(cfg: CfgNode) -> None:
    """Check the SSD keys.

    Validated: model keys are set only with ``MODEL.META_ARCHITECTURE == "SephSSD"`` (the
    ``AUGMENT`` keys only with ``AUGMENT.ENABLED``); with SephSSD: no masks, keypoints or
    precomputed proposals; counts, sizes, thresholds and ratios in range; one prior entry
    per feature map (the extra layers plus the base's outputs, where the base is known);
    with the augmentation on: ``INPUT.CROP`` off (the pipeline crops).

    Raises:
        ValueError: naming the offending keys and values.
    """
    ssd = cfg.MODEL.SEPH.SSD
    changed = non_default_keys(ssd, component_defaults(add_config, "SSD"))
    if cfg.MODEL.META_ARCHITECTURE != _META_ARCH:
        # INPUT_SIZE is also the augmentation's output size
        shared = ["INPUT_SIZE"] if ssd.AUGMENT.ENABLED else []
        model_keys = [k for k in changed if not k.startswith("AUGMENT.") and k not in shared]
        if model_keys:
            raise ValueError(
                f"{', '.join(f'{_KEY}.{k}' for k in model_keys)} set, but only "
                f"MODEL.META_ARCHITECTURE='{_META_ARCH}' reads it (got "
                f"{cfg.MODEL.META_ARCHITECTURE!r})."
            )
    _validate_augment(cfg, [k for k in changed if k.startswith("AUGMENT.") and k != "AUGMENT.ENABLED"])
    if cfg.MODEL.META_ARCHITECTURE != _META_ARCH:
        return
    for key in ("MASK_ON", "KEYPOINT_ON", "LOAD_PROPOSALS"):
        if cfg.MODEL[key]:
            raise ValueError(f"MODEL.{key}=True: {_META_ARCH} detects boxes only; set it to False.")
    check_int_at_least(ssd.NUM_CLASSES, f"{_KEY}.NUM_CLASSES", 1)
    check_int_at_least(ssd.INPUT_SIZE, f"{_KEY}.INPUT_SIZE", 1)
    check_int_at_least(ssd.TOPK_CANDIDATES_TEST, f"{_KEY}.TOPK_CANDIDATES_TEST", 1)
    extra_keys = ("EXTRA_CHANNELS", "EXTRA_STRIDES", "EXTRA_KERNEL_SIZES", "EXTRA_PADDINGS")
    extras = [list(ssd[k]) for k in extra_keys]
    if len({len(e) for e in extras}) != 1:
        raise ValueError(
            f"{_KEY}.EXTRA_CHANNELS / EXTRA_STRIDES / EXTRA_KERNEL_SIZES / EXTRA_PADDINGS need one "
            f"entry per extra layer each; got {extras}."
        )
    for key, minimum in zip(extra_keys, (2, 1, 1, 0)):
        for value in ssd[key]:
            check_int_at_least(value, f"{_KEY}.{key} entry", minimum)
    prior_keys = ("PRIOR_MIN_SIZES", "PRIOR_MAX_SIZES", "PRIOR_ASPECT_RATIOS", "PRIOR_STRIDES")
    prior_lists = {k: list(ssd[k]) for k in prior_keys}
    if len({len(v) for v in prior_lists.values()}) != 1:
        raise ValueError(
            f"{_KEY}.PRIOR_MIN_SIZES / PRIOR_MAX_SIZES / PRIOR_ASPECT_RATIOS / PRIOR_STRIDES need one "
            f"entry per feature map each; got {prior_lists}."
        )
    _check_numbers(ssd.PRIOR_MIN_SIZES, "PRIOR_MIN_SIZES", 0.0, float("inf"), open_low=True)
    _check_numbers(ssd.PRIOR_STRIDES, "PRIOR_STRIDES", 0.0, float("inf"), open_low=True)
    for low, high in zip(ssd.PRIOR_MIN_SIZES, ssd.PRIOR_MAX_SIZES):
        if not (_is_number(high) and low <= high):
            raise ValueError(
                f"{_KEY}.PRIOR_MAX_SIZES={list(ssd.PRIOR_MAX_SIZES)}; each must be >= its level's "
                f"PRIOR_MIN_SIZES entry ({list(ssd.PRIOR_MIN_SIZES)})."
            )
    for ratios in ssd.PRIOR_ASPECT_RATIOS:
        bad = not isinstance(ratios, (list, tuple)) or any(
            not _is_number(r) or r <= 0 or r == 1 for r in ratios
        )
        if bad:
            raise ValueError(
                f"{_KEY}.PRIOR_ASPECT_RATIOS={list(ssd.PRIOR_ASPECT_RATIOS)}; expected a list per "
                "level of ratios > 0 and != 1."
            )
    _check_numbers([ssd.PRIOR_OFFSET], "PRIOR_OFFSET", 0.0, 0.999999)
    weights = list(ssd.BBOX_REG_WEIGHTS)
    if len(weights) != 4:
        raise ValueError(f"{_KEY}.BBOX_REG_WEIGHTS={weights!r}; expected 4 numbers > 0.")
    _check_numbers(weights, "BBOX_REG_WEIGHTS", 0.0, float("inf"), open_low=True)
    _check_numbers([ssd.IOU_THRESHOLD], "IOU_THRESHOLD", 0.0, 1.0, open_low=True)
    _check_numbers([ssd.NEG_POS_RATIO], "NEG_POS_RATIO", 0.0, float("inf"), open_low=True)
    _check_numbers([ssd.SMOOTH_L1_BETA], "SMOOTH_L1_BETA", 0.0, float("inf"))
    _check_numbers([ssd.SCORE_THRESH_TEST], "SCORE_THRESH_TEST", 0.0, 0.999999)
    _check_numbers([ssd.NMS_THRESH_TEST], "NMS_THRESH_TEST", 0.0, 1.0, open_low=True)
    from sephnet.layers.norm import valid_norm_names

    if ssd.EXTRA_NORM not in valid_norm_names():
        raise ValueError(f"{_KEY}.EXTRA_NORM={ssd.EXTRA_NORM!r}; expected one of {valid_norm_names()}.")
    if cfg.MODEL.BACKBONE.NAME == _BACKBONE:
        known = {_VGG: 2, "build_resnet_backbone": len(cfg.MODEL.RESNETS.OUT_FEATURES)}
        base_levels = known.get(ssd.BASE_BACKBONE)
        levels = len(prior_lists["PRIOR_MIN_SIZES"])
        if base_levels is not None and base_levels + len(extras[0]) != levels:
            raise ValueError(
                f"{_KEY}: {ssd.BASE_BACKBONE} gives {base_levels} feature maps and "
                f"EXTRA_CHANNELS adds {len(extras[0])}, but the PRIOR_* lists have {levels} entries; "
                "give one prior entry per feature map."
            )


def _validate_augment(cfg: CfgNode, changed) -> None:
    augment = cfg.MODEL.SEPH.SSD.AUGMENT
    if not augment.ENABLED:
        if changed:
            raise ValueError(
                f"{', '.join(f'{_KEY}.{k}' for k in changed)} set, but {_KEY}.AUGMENT.ENABLED is False."
            )
        return
    _check_numbers([augment.EXPAND_PROB], "AUGMENT.EXPAND_PROB", 0.0, 1.0)
    _check_numbers([augment.EXPAND_MAX_RATIO], "AUGMENT.EXPAND_MAX_RATIO", 1.0, float("inf"))
    _check_numbers(augment.CROP_MIN_IOUS, "AUGMENT.CROP_MIN_IOUS", 0.0, 1.0)
    _check_numbers([augment.CROP_MIN_SIZE], "AUGMENT.CROP_MIN_SIZE", 0.0, 1.0, open_low=True)
    check_int_at_least(cfg.MODEL.SEPH.SSD.INPUT_SIZE, f"{_KEY}.INPUT_SIZE", 1)
    others = [f"MODEL.SEPH.AUGMENT.{name}.PROB" for name, node in cfg.MODEL.SEPH.AUGMENT.items()
              if name != "PHOTOMETRIC" and node.PROB > 0]
    if others:
        raise ValueError(
            f"{', '.join(others)} > 0 with {_KEY}.AUGMENT.ENABLED: SSD's pipeline applies only "
            "MODEL.SEPH.AUGMENT.PHOTOMETRIC of those; set the others to 0."
        )
    if cfg.INPUT.CROP.ENABLED:
        raise ValueError(
            f"INPUT.CROP.ENABLED=True with {_KEY}.AUGMENT.ENABLED: SSD's pipeline does its own "
            "min-IoU crop; turn INPUT.CROP off."
        )
    for key in ("MASK_ON", "KEYPOINT_ON", "LOAD_PROPOSALS"):
        if cfg.MODEL[key]:
            raise ValueError(
                f"MODEL.{key}=True with {_KEY}.AUGMENT.ENABLED: SSD's pipeline transforms boxes only."
            )
