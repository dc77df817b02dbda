"""Keys of the GE ROI heads ``SephGEROIHeads`` ("gev1", docs/components.md#ge-roi-heads):
``MODEL.SEPH.GE_ROI_HEADS.*``.

Selected by ``MODEL.ROI_HEADS.NAME: "SephGEROIHeads"``. Upstream keys reused with their
meaning: ``MODEL.ROI_HEADS.IN_FEATURES`` (gev1: P3-P6), ``MODEL.ROI_BOX_HEAD.NORM`` (the
towers' per-level norm; gev1: EvoNormS0, no activation after it),
``MODEL.ANCHOR_GENERATOR.SIZES`` (first size of each level = the side of that level's
regression squares; gev1: 64, 128, 256, 512), and every predictor key
(``MODEL.SEPH.PREDICTOR.*``, ``MODEL.ROI_BOX_HEAD.BBOX_REG_*``). ``MODEL.SEPH.BOX_HEAD.*``
and the ``ROI_BOX_HEAD`` pooler keys are not read (no box head, PointPool pooling).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.GE_ROI_HEADS"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.GE_ROI_HEADS.*`` with the gev1 values."""
    cfg.MODEL.SEPH.GE_ROI_HEADS = CfgNode()
    # 3x3 convs (C -> C, shared across levels, per-level norm) in each of the cls and box
    # towers; an int >= 0. gev1: 4.
    cfg.MODEL.SEPH.GE_ROI_HEADS.NUM_CONVS = 4
    # PointPool level assignment: a proposal of side s = sqrt(area) (pixels) goes to
    # IN_FEATURES[floor(CANONICAL_LEVEL + log2(s / CANONICAL_BOX_SIZE))], clamped to the
    # levels. gev1: 64 px and index 0, i.e. P3 < 128 px, P4 [128, 256), P5 [256, 512),
    # P6 >= 512. CANONICAL_BOX_SIZE: pixels, > 0.
    cfg.MODEL.SEPH.GE_ROI_HEADS.CANONICAL_BOX_SIZE = 64
    # Index into MODEL.ROI_HEADS.IN_FEATURES of the canonical level (the original's
    # canonical_level, counted in IN_FEATURES, not detectron2's absolute level); int >= 0.
    cfg.MODEL.SEPH.GE_ROI_HEADS.CANONICAL_LEVEL = 0


def validate_config(cfg: CfgNode) -> None:
    """With ``MODEL.ROI_HEADS.NAME = "SephGEROIHeads"``: NUM_CONVS is an int >= 0,
    CANONICAL_BOX_SIZE > 0, CANONICAL_LEVEL indexes ``MODEL.ROI_HEADS.IN_FEATURES``, and
    ``MODEL.ANCHOR_GENERATOR.SIZES`` has one entry or one per ROI level.

    Raises:
        ValueError: naming the offending keys and values.
    """
    if cfg.MODEL.ROI_HEADS.NAME != "SephGEROIHeads":
        return
    node = cfg.MODEL.SEPH.GE_ROI_HEADS
    num_convs = node.NUM_CONVS
    if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 0:
        raise ValueError(f"{_KEY}.NUM_CONVS={num_convs!r}; expected an int >= 0.")
    size = node.CANONICAL_BOX_SIZE
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
        raise ValueError(f"{_KEY}.CANONICAL_BOX_SIZE={size!r}; expected a number > 0 (pixels).")
    levels = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    index = node.CANONICAL_LEVEL
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(levels):
        raise ValueError(
            f"{_KEY}.CANONICAL_LEVEL={index!r}; expected an index into "
            f"MODEL.ROI_HEADS.IN_FEATURES={levels}."
        )
    from sephnet.modeling.roi_heads.ge_roi_heads import square_sides_from_config

    square_sides_from_config(cfg, len(levels))
