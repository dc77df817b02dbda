"""Keys of the one-stage detector ``SephFCOS`` (``MODEL.META_ARCHITECTURE: "SephFCOS"``).

The head, focal loss and test-time filters read detectron2's ``MODEL.RETINANET`` keys with
their meaning (see ``sephnet/modeling/meta_arch/fcos.py``); FCOS's own choices are here.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.FCOS"
_META_ARCH = "SephFCOS"
_BOX_LOSSES = ("giou", "iou")
_DEFAULTS = {"CENTER_SAMPLING": True, "CENTER_SAMPLING_RADIUS": 1.5, "BOX_LOSS": "giou"}


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.FCOS.*`` (defaults: detectron2's FCOS)."""
    cfg.MODEL.SEPH.FCOS = CfgNode()
    # Centre sampling: a location is positive only if it lies within
    # CENTER_SAMPLING_RADIUS strides (Chebyshev distance) of the gt box centre. False: every
    # location inside the box is a candidate (the first FCOS paper).
    cfg.MODEL.SEPH.FCOS.CENTER_SAMPLING = _DEFAULTS["CENTER_SAMPLING"]
    # The radius above, in strides (> 0); read only when CENTER_SAMPLING is True.
    cfg.MODEL.SEPH.FCOS.CENTER_SAMPLING_RADIUS = _DEFAULTS["CENTER_SAMPLING_RADIUS"]
    # Box loss on positives: "giou" (detectron2's FCOS) or "iou" (-ln IoU, the FCOS paper).
    cfg.MODEL.SEPH.FCOS.BOX_LOSS = _DEFAULTS["BOX_LOSS"]


def validate_config(cfg: CfgNode) -> None:
    """Raise ValueError for a bad BOX_LOSS or radius, or FCOS keys changed for another model."""
    node = cfg.MODEL.SEPH.FCOS
    if cfg.MODEL.META_ARCHITECTURE != _META_ARCH:
        changed = [k for k, v in _DEFAULTS.items() if node[k] != v]
        if changed:
            raise ValueError(
                f"{_KEY}.{changed[0]}={node[changed[0]]!r} is read only by MODEL.META_ARCHITECTURE="
                f"'{_META_ARCH}', got {cfg.MODEL.META_ARCHITECTURE!r}."
            )
        return
    if cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE != "smooth_l1":
        raise ValueError(
            f"MODEL.RETINANET.BBOX_REG_LOSS_TYPE={cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE!r} is not read "
            f"by {_META_ARCH}; its box loss is {_KEY}.BOX_LOSS."
        )
    if node.BOX_LOSS not in _BOX_LOSSES:
        raise ValueError(f"{_KEY}.BOX_LOSS={node.BOX_LOSS!r}; expected one of {_BOX_LOSSES}.")
    if not node.CENTER_SAMPLING_RADIUS > 0:
        raise ValueError(f"{_KEY}.CENTER_SAMPLING_RADIUS={node.CENTER_SAMPLING_RADIUS!r}; expected > 0.")
    if not isinstance(node.CENTER_SAMPLING, bool):
        raise ValueError(f"{_KEY}.CENTER_SAMPLING={node.CENTER_SAMPLING!r}; expected true or false.")
