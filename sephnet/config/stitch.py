"""Key of the original's batch stitching: ``MODEL.SEPH.STITCH.PROB`` (sephnet.data.stitch)."""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.STITCH.PROB"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.STITCH.*`` (default off)."""
    cfg.MODEL.SEPH.STITCH = CfgNode()
    # Probability per training batch (per process) that a random pair of its images is
    # stitched into one image replacing the first (the original's INPUT.STITCH; sephNv15:
    # 0.2), in [0, 1]; 0 = off (detectron2's loader unchanged). Boxes only (no MASK_ON,
    # no keypoints).
    cfg.MODEL.SEPH.STITCH.PROB = 0.0


def validate_config(cfg: CfgNode) -> None:
    """PROB is a number in [0, 1]; with PROB > 0 the model trains on boxes only.

    Raises:
        ValueError: naming the key and value.
    """
    prob = cfg.MODEL.SEPH.STITCH.PROB
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"{_KEY}={prob!r}; expected a number in [0, 1].")
    if prob > 0 and (cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON):
        raise ValueError(
            f"{_KEY}={prob} stitches boxes only; MODEL.MASK_ON / KEYPOINT_ON must be False."
        )
