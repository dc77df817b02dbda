"""Keys of DropBlock in the backbone and the ROI heads: ``MODEL.SEPH.DROPBLOCK.*`` (a survey trick).

Off by default (no stage, no head). Applied by ``build_seph_resnet_fpn_backbone`` (stages)
and ``SephStandardROIHeads`` (heads); see ``sephnet/layers/dropblock.py`` and
``sephnet/modeling/head_tricks.py``. Active in training only.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.DROPBLOCK"
_STAGES = ("res2", "res3", "res4", "res5")
_HEADS = ("box", "mask")
_BACKBONES = ("build_seph_resnet_fpn_backbone",)


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.DROPBLOCK.*``."""
    node = cfg.MODEL.SEPH.DROPBLOCK = CfgNode()
    # ResNet stages whose output is dropped (a list of "res2".."res5"; [] = none). The
    # DropBlock paper: ["res4", "res5"]. Needs MODEL.BACKBONE.NAME
    # "build_seph_resnet_fpn_backbone".
    node.BACKBONE_STAGES = []
    # ROI heads whose hidden convs (after norm and activation) are dropped: a list of "box"
    # and/or "mask" ([] = none); needs sephnet ROI heads and conv layers in those heads.
    node.HEADS = []
    # Fraction of units to drop, in (0, 1) when a stage or head is set (0.1 in the paper).
    node.DROP_PROB = 0.1
    # Side of the dropped squares in the backbone stages (an int >= 1, clipped to the map;
    # 7 in the paper) and in the heads (an int >= 1; the heads' maps are 7x7 / 14x14).
    node.BACKBONE_BLOCK_SIZE = 7
    node.HEAD_BLOCK_SIZE = 3
    # Iterations over which the drop probability rises linearly to DROP_PROB (an int >= 0;
    # 0 = DROP_PROB from the start). The paper ramps over the whole schedule.
    node.RAMP_ITERS = 0


def _positive_int(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{_KEY}.{key}={value!r}; expected an int >= 1.")


def validate_config(cfg: CfgNode) -> None:
    """Check the DropBlock keys.

    Validated: BACKBONE_STAGES within res2..res5 and among MODEL.RESNETS.OUT_FEATURES'
    stages built (a stage up to the last output), used with a backbone builder that reads
    it; HEADS within box/mask, "mask" only with MODEL.MASK_ON, any head only with a Seph ROI
    head; DROP_PROB in (0, 1); block sizes ints >= 1; RAMP_ITERS an int >= 0; DROP_PROB,
    RAMP_ITERS and the block sizes differ
    from their defaults only when what reads them is on.

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.DROPBLOCK
    stages, heads = list(node.BACKBONE_STAGES), list(node.HEADS)
    _positive_int(node.BACKBONE_BLOCK_SIZE, "BACKBONE_BLOCK_SIZE")
    _positive_int(node.HEAD_BLOCK_SIZE, "HEAD_BLOCK_SIZE")
    ramp = node.RAMP_ITERS
    if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
        raise ValueError(f"{_KEY}.RAMP_ITERS={ramp!r}; expected an int >= 0.")
    prob = node.DROP_PROB
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 < prob < 1:
        raise ValueError(f"{_KEY}.DROP_PROB={prob!r}; expected a number in (0, 1).")
    bad = [s for s in stages if s not in _STAGES] + [h for h in heads if h not in _HEADS]
    if bad or len(set(stages)) != len(stages) or len(set(heads)) != len(heads):
        raise ValueError(
            f"{_KEY}.BACKBONE_STAGES={stages} / HEADS={heads}: expected distinct entries of "
            f"{_STAGES} / {_HEADS}."
        )
    if stages:
        backbone = cfg.MODEL.BACKBONE.NAME
        if backbone not in _BACKBONES:
            raise ValueError(
                f"{_KEY}.BACKBONE_STAGES={stages} is applied by {_BACKBONES}; got "
                f"MODEL.BACKBONE.NAME={backbone!r}."
            )
        last = max(_STAGES.index(f) for f in cfg.MODEL.RESNETS.OUT_FEATURES if f in _STAGES)
        beyond = [s for s in stages if _STAGES.index(s) > last]
        if beyond:
            raise ValueError(
                f"{_KEY}.BACKBONE_STAGES={stages}: {beyond} are not built (MODEL.RESNETS."
                f"OUT_FEATURES={list(cfg.MODEL.RESNETS.OUT_FEATURES)})."
            )
    if heads:
        roi_heads = cfg.MODEL.ROI_HEADS.NAME
        if not roi_heads.startswith("Seph"):
            raise ValueError(
                f"{_KEY}.HEADS={heads} is applied by sephnet's ROI heads; MODEL.ROI_HEADS.NAME="
                f"{roi_heads!r} is not one."
            )
        if "mask" in heads and not cfg.MODEL.MASK_ON:
            raise ValueError(f"{_KEY}.HEADS={heads} has 'mask' but MODEL.MASK_ON is False.")
    unread = []
    if not stages and not heads and prob != 0.1:
        unread.append(f"DROP_PROB={prob!r} (needs BACKBONE_STAGES or HEADS)")
    if not stages and node.BACKBONE_BLOCK_SIZE != 7:
        unread.append(f"BACKBONE_BLOCK_SIZE={node.BACKBONE_BLOCK_SIZE!r} (needs BACKBONE_STAGES)")
    if not heads and node.HEAD_BLOCK_SIZE != 3:
        unread.append(f"HEAD_BLOCK_SIZE={node.HEAD_BLOCK_SIZE!r} (needs HEADS)")
    if not stages and not heads and ramp != 0:
        unread.append(f"RAMP_ITERS={ramp!r} (needs BACKBONE_STAGES or HEADS)")
    if unread:
        raise ValueError(f"{_KEY}: {', '.join(unread)} would not be read; set what it needs.")
