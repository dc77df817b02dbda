"""Key of the ROI poolers' level rule: ``MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX``.

A box of side ``s = sqrt(area)`` pixels is pooled from the level
``floor(canonical + log2(s / 224))``, clamped to the pooled levels. detectron2 fixes
``canonical`` at level 4 (P4 for 224-pixel boxes) whatever ``MODEL.ROI_HEADS.IN_FEATURES``
are; the original counted it as an index into IN_FEATURES (docs/components.md#roi-pooling). Both give the same levels for P3-P6, not for P2-P6 (sephNv15).
"""
import math
from typing import Dict, List

from sephnet.backend import CfgNode, ShapeSpec

__all__ = ["add_config", "validate_config", "canonical_level"]

_KEY = "MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX"
_DETECTRON2_LEVEL = 4


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.ROI_POOLER.*`` (default detectron2's rule)."""
    cfg.MODEL.SEPH.ROI_POOLER = CfgNode()
    # Which level 224-pixel boxes are pooled from, for the box and mask poolers of sephnet's
    # ROI heads (standard and cascade): -1 = detectron2's canonical level 4 (P4) (default);
    # k >= 0 = the k-th entry of MODEL.ROI_HEADS.IN_FEATURES (the original's rule; 1 in
    # every log-row config: P3 below 224 px on P3-P6, P2 below 224 px on P2-P6). With a
    # single pooled level the rule is not used.
    cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX = -1


def validate_config(cfg: CfgNode) -> None:
    """CANONICAL_LEVEL_INDEX is an int >= -1 and, with several pooled levels, indexes
    ``MODEL.ROI_HEADS.IN_FEATURES``.

    Raises:
        ValueError: naming the key and its value.
    """
    index = cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX
    if isinstance(index, bool) or not isinstance(index, int) or index < -1:
        raise ValueError(f"{_KEY}={index!r}; expected -1 (detectron2's rule) or an int >= 0.")
    levels = len(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    if levels > 1 and index >= levels:
        raise ValueError(
            f"{_KEY}={index} does not index MODEL.ROI_HEADS.IN_FEATURES="
            f"{list(cfg.MODEL.ROI_HEADS.IN_FEATURES)} ({levels} levels)."
        )


def canonical_level(cfg: CfgNode, input_shape: Dict[str, ShapeSpec], in_features: List[str]) -> int:
    """The ``canonical_level`` argument of detectron2's ``ROIPooler`` for the pooled levels.

    ``floor(min_level + k + log2(s / 224))`` clamped to the levels, minus ``min_level``, is
    the original's ``clip(floor(k + log2(s / 224)), 0, L - 1)``, so the index rule is
    detectron2's pooler with ``canonical_level = min_level + k``.

    Returns:
        4 for index -1, else ``log2(stride of in_features[0]) + index``.
    """
    index = cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX
    if index < 0:
        return _DETECTRON2_LEVEL
    return int(round(math.log2(input_shape[in_features[0]].stride))) + index
