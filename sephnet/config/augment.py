"""Keys of the training-data augmentations from the tricks survey: ``MODEL.SEPH.AUGMENT.*``.

Every augmentation is off by default (probability 0). They act in training only, through
:func:`sephnet.data.build_train_loader` (``train_net.py``'s ``Trainer.build_train_loader``):

* per sample, after detectron2's resize/flip (and ``INPUT.CROP``): ``PHOTOMETRIC``;
* per training item, with a second (MixUp, CutMix) or three more (Mosaic) samples drawn
  from the training set: ``MIXUP``, ``CUTMIX``, ``MOSAIC`` (at most one per item);
* on the final image: ``RANDOM_ERASE`` and ``CUTOUT`` (pixels only; boxes and masks kept).

See ``docs/augmentations.md`` for what each one does to images, boxes and masks.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config", "any_enabled"]

_KEY = "MODEL.SEPH.AUGMENT"
_MIXES = ("MIXUP", "CUTMIX", "MOSAIC")
_ALL = ("PHOTOMETRIC", "RANDOM_ERASE", "CUTOUT") + _MIXES


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.AUGMENT.*`` with defaults (everything off)."""
    cfg.MODEL.SEPH.AUGMENT = CfgNode()
    node = cfg.MODEL.SEPH.AUGMENT

    node.PHOTOMETRIC = CfgNode()
    # Probability (in [0, 1]) that a sample's colours are distorted: brightness, contrast,
    # saturation and hue, each with its own random amount, in that order (the original's
    # colour distortion with hue). 0 = off.
    node.PHOTOMETRIC.PROB = 0.0
    # Brightness: add delta * 255 to every channel, delta ~ U(-x, x) (x in [0, 1]).
    node.PHOTOMETRIC.BRIGHTNESS_DELTA = 0.1
    # Contrast: scale the distance to the image mean by f ~ U(low, high) (0 <= low <= high).
    node.PHOTOMETRIC.CONTRAST_RANGE = [0.8, 1.2]
    # Saturation: scale the distance to the grey value by f ~ U(low, high) (0 <= low <= high).
    node.PHOTOMETRIC.SATURATION_RANGE = [0.5, 1.5]
    # Hue: rotate the hue by d ~ U(-x, x) turns of the colour circle (x in [0, 0.5]).
    node.PHOTOMETRIC.HUE_DELTA = 0.1

    node.RANDOM_ERASE = CfgNode()
    # Probability (in [0, 1]) of random erasing (Zhong et al. 2017): one rectangle of the
    # final training image is replaced by uniform noise in [0, 255]. Boxes and masks are
    # kept (the object is occluded, not removed). 0 = off.
    node.RANDOM_ERASE.PROB = 0.0
    # Area of the rectangle as a fraction of the image area, drawn from U(low, high),
    # 0 < low <= high <= 1.
    node.RANDOM_ERASE.AREA_RANGE = [0.02, 0.4]
    # Aspect ratio h / w of the rectangle, drawn log-uniformly from [low, high], 0 < low <= high.
    node.RANDOM_ERASE.ASPECT_RANGE = [0.3, 3.3]

    node.CUTOUT = CfgNode()
    # Probability (in [0, 1]) of CutOut (DeVries & Taylor 2017): NUM_HOLES squares of the
    # final training image are set to 0, centres uniform over the image (squares may
    # stick out). Boxes and masks are kept. 0 = off.
    node.CUTOUT.PROB = 0.0
    # Number of squares (an int >= 1).
    node.CUTOUT.NUM_HOLES = 1
    # Side of each square in pixels of the resized image (an int >= 1; the original used
    # 16, i.e. its pad_size 8 on each side of the centre).
    node.CUTOUT.SIZE = 16

    node.MIXUP = CfgNode()
    # Probability (in [0, 1]) that a training item is the MixUp of its sample and another
    # one drawn from the training set: pixels lam * A + (1 - lam) * B on a canvas holding
    # both (top-left aligned), instances of both kept. PROB of MIXUP, CUTMIX and MOSAIC
    # sum to at most 1 (they exclude each other). 0 = off.
    node.MIXUP.PROB = 0.0
    # lam ~ Beta(ALPHA, ALPHA) (ALPHA > 0; 1.5 as in "Bag of Freebies" for detection).
    node.MIXUP.ALPHA = 1.5

    node.CUTMIX = CfgNode()
    # Probability (in [0, 1]) of CutMix: a rectangle of the item's image is replaced by the
    # same rectangle of another training sample resized to the same size; instances of
    # the first keep their parts outside it, the second's their parts inside. 0 = off.
    node.CUTMIX.PROB = 0.0
    # The rectangle covers 1 - lam of the image, lam ~ Beta(ALPHA, ALPHA) (ALPHA > 0).
    node.CUTMIX.ALPHA = 1.0

    node.MOSAIC = CfgNode()
    # Probability (in [0, 1]) of Mosaic: four samples (the item's and three drawn from the
    # training set), each at half size, meet at a random centre of a canvas of the item's
    # size; the parts outside the canvas are cut off, with their instances. 0 = off.
    node.MOSAIC.PROB = 0.0
    # The centre's x and y as fractions of the canvas, each drawn from U(low, high),
    # 0 <= low <= high <= 1.
    node.MOSAIC.CENTER_RANGE = [0.25, 0.75]


def any_enabled(cfg: CfgNode) -> bool:
    """Whether any ``MODEL.SEPH.AUGMENT`` augmentation has a probability above 0."""
    return any(cfg.MODEL.SEPH.AUGMENT[name].PROB > 0 for name in _ALL)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(node: CfgNode, key: str, low_bound: float, high_bound: float, strict_low: bool = False) -> None:
    value = node[key.split(".")[-1]]
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(_is_number(v) for v in value)
        and (value[0] > low_bound if strict_low else value[0] >= low_bound)
        and value[0] <= value[1] <= high_bound
    )
    if not ok:
        opening = "(" if strict_low else "["
        raise ValueError(
            f"{_KEY}.{key}={value!r}; expected [low, high] with low <= high inside "
            f"{opening}{low_bound}, {high_bound}]."
        )


def _check_number(node: CfgNode, key: str, low: float, high: float, strict_low: bool = False) -> None:
    value = node[key.split(".")[-1]]
    inside = _is_number(value) and (value > low if strict_low else value >= low) and value <= high
    if not inside:
        opening = "(" if strict_low else "["
        raise ValueError(f"{_KEY}.{key}={value!r}; expected a number in {opening}{low}, {high}].")


def validate_config(cfg: CfgNode) -> None:
    """Check the augmentation keys.

    Validated: every PROB is in [0, 1] and the three mixing probabilities sum to at most
    1; ranges are ``[low, high]`` pairs inside their bounds; ALPHA > 0; CUTOUT sizes are
    positive ints; PHOTOMETRIC needs ``INPUT.FORMAT`` "BGR" or "RGB". With any augmentation on: no keypoints (``MODEL.KEYPOINT_ON``) and no
    precomputed proposals (``MODEL.LOAD_PROPOSALS``), which these augmentations do not
    transform.

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.AUGMENT
    for name in _ALL:
        _check_number(node[name], f"{name}.PROB", 0.0, 1.0)
    total = sum(node[name].PROB for name in _MIXES)
    if total > 1.0 + 1e-9:
        raise ValueError(
            f"{_KEY}.MIXUP.PROB + CUTMIX.PROB + MOSAIC.PROB = {total:g}; they exclude each other "
            "per training item, so the sum must be at most 1."
        )
    photometric = node.PHOTOMETRIC
    _check_number(photometric, "PHOTOMETRIC.BRIGHTNESS_DELTA", 0.0, 1.0)
    _check_range(photometric, "PHOTOMETRIC.CONTRAST_RANGE", 0.0, float("inf"))
    _check_range(photometric, "PHOTOMETRIC.SATURATION_RANGE", 0.0, float("inf"))
    _check_number(photometric, "PHOTOMETRIC.HUE_DELTA", 0.0, 0.5)
    _check_range(node.RANDOM_ERASE, "RANDOM_ERASE.AREA_RANGE", 0.0, 1.0, strict_low=True)
    _check_range(node.RANDOM_ERASE, "RANDOM_ERASE.ASPECT_RANGE", 0.0, float("inf"), strict_low=True)
    for key in ("NUM_HOLES", "SIZE"):
        value = node.CUTOUT[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{_KEY}.CUTOUT.{key}={value!r}; expected an int >= 1.")
    _check_number(node.MIXUP, "MIXUP.ALPHA", 0.0, float("inf"), strict_low=True)
    _check_number(node.CUTMIX, "CUTMIX.ALPHA", 0.0, float("inf"), strict_low=True)
    _check_range(node.MOSAIC, "MOSAIC.CENTER_RANGE", 0.0, 1.0)
    if photometric.PROB > 0 and cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise ValueError(
            f"{_KEY}.PHOTOMETRIC needs colour images: INPUT.FORMAT 'BGR' or 'RGB'; got "
            f"{cfg.INPUT.FORMAT!r}."
        )
    if any_enabled(cfg):
        for key in ("KEYPOINT_ON", "LOAD_PROPOSALS"):
            if cfg.MODEL[key]:
                raise ValueError(
                    f"{_KEY}.* augmentations do not transform "
                    f"{'keypoints' if key == 'KEYPOINT_ON' else 'precomputed proposals'}; "
                    f"set MODEL.{key}=False or turn the augmentations off."
                )
