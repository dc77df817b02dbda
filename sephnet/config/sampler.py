"""Keys of the ROI sampler: ``MODEL.SEPH.SAMPLER.*`` (SEPH_SPEC B §2.10, rows sephv16/18/18_1).

How many ROIs are sampled stays upstream's: ``MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE`` (128 in
most rows, 512 for "roi nr=512": sephv14 and its family) and ``POSITIVE_FRACTION`` (0.25),
with detectron2's "at most that many, no repetition" rule (Part A item 1).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.SAMPLER"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.SAMPLER.*`` with defaults (detectron2's uniform sampling)."""
    cfg.MODEL.SEPH.SAMPLER = CfgNode()
    node = cfg.MODEL.SEPH.SAMPLER
    # Which sampler picks the training ROIs of SephStandardROIHeads (a name in
    # SEPH_ROI_SAMPLER_REGISTRY):
    # "RandomROISampler": detectron2's subsample_labels, uniform (default; every row before
    #   the "new rcn sample" of Aug 2020: baseline, seph, sephv2..sephv13 except the
    #   balanced ones below).
    # "BalancedROISampler": the log's "new rcn sample", switchable with BALANCED_POS /
    #   BALANCED_NEG below (recipes 3)-9), sephv14*, sephv15*, sephv16/17/18*, sephv19,
    #   sephv21, sephv22, the reference recipe sephv14_10).
    # "OHEMROISampler": online hard example mining (not a log row): the highest-loss
    #   foreground and background under the current model; needs MODEL.ROI_HEADS.NAME
    #   "SephStandardROIHeads" (which scores every candidate before sampling).
    node.NAME = "RandomROISampler"
    # BalancedROISampler only: split the foreground quota equally over the gt instances
    # (floor(P / #instances) each, then a uniform fill) instead of drawing uniformly.
    # True in "new rcn sample" rows; False in sephv16 ("no balance") and sephv18_1
    # ("no pos balance sample").
    node.BALANCED_POS = True
    # BalancedROISampler only: split the background quota equally over NUM_NEG_BINS IoU
    # bins (floor(N / NUM_NEG_BINS) each, then a uniform fill) instead of drawing uniformly.
    # True in "new rcn sample" rows; False in sephv16 ("no balance") and sephv18 ("no neg
    # balance sample").
    node.BALANCED_NEG = True
    # BalancedROISampler only: number of equal-width IoU bins over [NEG_LOW_IOU,
    # NEG_HIGH_IOU] (an int >= 1). 8 in every row after 2020-08-14 (7 before).
    node.NUM_NEG_BINS = 8
    # BalancedROISampler only: the binned IoU range (unitless IoU; LOW < HIGH, and LOW below
    # the ROI matcher's lowest threshold MODEL.ROI_HEADS.IOU_THRESHOLDS). Log: [-0.2, 0.5],
    # so with 8 bins the two bins below 0 are always empty (kept for fidelity, B §4 item 22).
    # Negative IoUs above HIGH (possible with IOU_THRESHOLDS above 0.5) join the last bin.
    node.NEG_LOW_IOU = -0.2
    node.NEG_HIGH_IOU = 0.5


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(cfg: CfgNode) -> None:
    """Check the sampler keys.

    Validated: NAME is registered (the error lists the samplers); a sampler ranking by loss
    (OHEM) comes with MODEL.ROI_HEADS.NAME "SephStandardROIHeads"; BALANCED_POS / _NEG are
    booleans; NUM_NEG_BINS is an int >= 1; NEG_LOW_IOU < NEG_HIGH_IOU; NEG_LOW_IOU is below
    the lowest ``MODEL.ROI_HEADS.IOU_THRESHOLDS`` entry (else every negative falls in one
    bin).

    Raises:
        ValueError: naming the offending keys and values.
    """
    # Imported here so the config package imports no model code at module level.
    import sephnet.modeling.samplers  # noqa: F401  (registers the samplers)
    from sephnet.modeling.registry import SEPH_ROI_SAMPLER_REGISTRY, get_registered

    node = cfg.MODEL.SEPH.SAMPLER
    sampler = get_registered(SEPH_ROI_SAMPLER_REGISTRY, node.NAME, f"{_KEY}.NAME")
    roi_heads = cfg.MODEL.ROI_HEADS.NAME
    if getattr(sampler, "ranks_by_loss", False) and roi_heads != "SephStandardROIHeads":
        raise ValueError(
            f"{_KEY}.NAME={node.NAME!r} ranks candidates by their loss, which only "
            f"SephStandardROIHeads computes; got MODEL.ROI_HEADS.NAME={roi_heads!r}."
        )
    for key in ("BALANCED_POS", "BALANCED_NEG"):
        if not isinstance(node[key], bool):
            raise ValueError(f"{_KEY}.{key}={node[key]!r}; expected True or False.")
    bins = node.NUM_NEG_BINS
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"{_KEY}.NUM_NEG_BINS={bins!r}; expected an int >= 1.")
    low, high = node.NEG_LOW_IOU, node.NEG_HIGH_IOU
    if not (_is_number(low) and _is_number(high) and low < high):
        raise ValueError(
            f"{_KEY}.NEG_LOW_IOU={low!r} and {_KEY}.NEG_HIGH_IOU={high!r}; expected numbers "
            "with LOW < HIGH."
        )
    thresholds = list(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS)
    if thresholds and not low < min(thresholds):
        raise ValueError(
            f"{_KEY}.NEG_LOW_IOU={low!r} must be below the lowest ROI matcher threshold "
            f"(MODEL.ROI_HEADS.IOU_THRESHOLDS={thresholds}); otherwise every negative falls "
            "in the first bin."
        )
