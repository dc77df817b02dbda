"""Key of the ROI heads' activation: ``MODEL.SEPH.HEAD_ACTIVATION.NAME`` (a survey trick).

Read by ``SephStandardROIHeads`` (and the Cascade / GE heads built on it), which swaps the
ReLU modules of its box and mask heads (see ``sephnet/layers/activations.py``).
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

# Mirrors sephnet.layers.activations.HEAD_ACTIVATIONS (tests check that they agree).
_NAMES = ("ReLU", "Mish", "Swish", "HardSwish")


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.HEAD_ACTIVATION.NAME`` (default ReLU: detectron2's heads)."""
    cfg.MODEL.SEPH.HEAD_ACTIVATION = CfgNode()
    # Non-linearity of the ROI box and mask heads: "ReLU" (detectron2; every log row),
    # "Mish" (x tanh(softplus x)), "Swish" (x sigmoid x) or "HardSwish" (x relu6(x+3)/6).
    # Replaces the heads' ReLUs, so it needs heads that have some: a norm with its own
    # non-linearity (EvoNormS0, FRN) leaves none, which is refused when the model is built.
    cfg.MODEL.SEPH.HEAD_ACTIVATION.NAME = "ReLU"


def validate_config(cfg: CfgNode) -> None:
    """Check NAME is known and, when not "ReLU", that the ROI heads are sephnet's.

    Raises:
        ValueError: naming the key and value.
    """
    name = cfg.MODEL.SEPH.HEAD_ACTIVATION.NAME
    if name not in _NAMES:
        raise ValueError(f"MODEL.SEPH.HEAD_ACTIVATION.NAME={name!r}; expected one of {_NAMES}.")
    roi_heads = cfg.MODEL.ROI_HEADS.NAME
    if name != "ReLU" and not roi_heads.startswith("Seph"):
        raise ValueError(
            f"MODEL.SEPH.HEAD_ACTIVATION.NAME={name!r} is applied by sephnet's ROI heads; "
            f"MODEL.ROI_HEADS.NAME={roi_heads!r} is not one."
        )
