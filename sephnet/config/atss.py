"""Keys of the one-stage detector ``SephATSS`` (``MODEL.META_ARCHITECTURE: "SephATSS"``).

Everything else is detectron2's ``MODEL.RETINANET`` / ``MODEL.ANCHOR_GENERATOR`` keys with
their meaning (see ``sephnet/modeling/meta_arch/atss.py``).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.ATSS"
_META_ARCH = "SephATSS"
_DEFAULT_TOPK = 9


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.ATSS.*`` (default: the paper's k = 9)."""
    cfg.MODEL.SEPH.ATSS = CfgNode()
    # Candidates per level and gt: the TOPK anchors whose centres are nearest the gt centre;
    # their IoU mean + std is the gt's positive threshold. An int >= 1.
    cfg.MODEL.SEPH.ATSS.TOPK = _DEFAULT_TOPK


def validate_config(cfg: CfgNode) -> None:
    """Raise ValueError for a bad TOPK, or TOPK changed for another meta-architecture."""
    topk = cfg.MODEL.SEPH.ATSS.TOPK
    if cfg.MODEL.META_ARCHITECTURE != _META_ARCH:
        if topk != _DEFAULT_TOPK:
            raise ValueError(
                f"{_KEY}.TOPK={topk!r} is read only by MODEL.META_ARCHITECTURE='{_META_ARCH}', "
                f"got {cfg.MODEL.META_ARCHITECTURE!r}."
            )
        return
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"{_KEY}.TOPK={topk!r}; expected an int >= 1.")
    anchors = cfg.MODEL.ANCHOR_GENERATOR
    if any(len(r) != 1 for r in anchors.ASPECT_RATIOS) or any(len(s) != 1 for s in anchors.SIZES):
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.SIZES={anchors.SIZES} / ASPECT_RATIOS={anchors.ASPECT_RATIOS}: "
            "SephATSS uses one anchor per location (one size per level, one aspect ratio)."
        )
