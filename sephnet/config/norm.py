"""Keys of sephnet's norms and of the components placing them (SEPH_SPEC B §2.3/2.4/2.8/2.18).

``MODEL.SEPH.EVONORM.*`` parameterise EvoNormS0 wherever a ``NORM`` key names it;
``MODEL.SEPH.FPN.*`` choose the top block of ``build_seph_resnet_fpn_backbone``;
``MODEL.SEPH.RPN_HEAD.*`` configure ``SephRPNHead``. The norms themselves are chosen by the
upstream keys ``MODEL.FPN.NORM``, ``MODEL.ROI_MASK_HEAD.NORM`` and ``MODEL.ROI_BOX_HEAD.NORM``
(the last is checked by the box-head component, ``sephnet/config/box_head.py``).
"""
from typing import Optional, Tuple

from sephnet.backend import CfgNode
from sephnet.layers.norm import is_sephnet_norm, norm_uses_groups, resolve_norm

__all__ = ["add_config", "validate_config"]

_SEPH_BACKBONE_PREFIX = "build_seph_"
_SEPH_MASK_HEAD_PREFIX = "Seph"
_SEPH_RPN_HEAD = "SephRPNHead"
_DEFAULT_TOP_BLOCK = "LastLevelMaxPool"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.EVONORM.*``, ``MODEL.SEPH.FPN.*`` and ``MODEL.SEPH.RPN_HEAD.*``."""
    seph = cfg.MODEL.SEPH
    seph.EVONORM = CfgNode()
    # Number of channel groups G of EvoNormS0 (positive int dividing the channels of every
    # layer it normalises). The original used 32 everywhere (every EvoNorm row of the log:
    # "EvoNormS0 mask head", sephv2 and all later sephv*/sephN* configs).
    seph.EVONORM.GROUPS = 32
    # Epsilon added to the group variance inside the square root (positive float).
    # 1e-5 in every log row. Also FRN's epsilon (added to the mean square) when a NORM key
    # names "FRN".
    seph.EVONORM.EPS = 1e-5

    # Created only if absent: other components may add keys under the same node.
    if "FPN" not in seph:
        seph.FPN = CfgNode()
    # Extra pyramid levels above the last FPN input, built by build_seph_resnet_fpn_backbone:
    # "LastLevelMaxPool": detectron2's P6 = max-pool(P5) (default; detectron2's baseline
    #   and the log's June "base line").
    # "LastLevelP6P7": detectron2's RetinaNet block, P6 = conv3x3/2(C5), P7 = conv3x3/2(ReLU(P6)),
    #   no norm.
    # "LastLevelStridedConvs": TOP_BLOCK_NUM_LEVELS successive 3x3 stride-2 convs starting
    #   from the last FPN input (C5) itself, each followed by MODEL.FPN.NORM (ReLU between
    #   levels unless the norm has its own non-linearity). The log's "P6 = conv3x3/2 on C5"
    #   (FPN.LAST_LEVEL_NUM_CONV 1 with EvoNorm): every sephv* config.
    seph.FPN.TOP_BLOCK = _DEFAULT_TOP_BLOCK
    # Levels added by "LastLevelStridedConvs" (int >= 1; ignored by the other blocks).
    # 1 in every sephv* config.
    seph.FPN.TOP_BLOCK_NUM_LEVELS = 1

    seph.RPN_HEAD = CfgNode()
    # Norm after SephRPNHead's shared 3x3 conv, with separate parameters for each input
    # level (MODEL.RPN.IN_FEATURES); needs MODEL.RPN.HEAD_NAME "SephRPNHead". "" = none
    # (the head then equals detectron2's StandardRPNHead); any name of resolve_norm, e.g.
    # "EvoNormS0" (log sephv17, sephv14_12). A ReLU follows unless the norm has its own
    # non-linearity.
    seph.RPN_HEAD.NORM = ""


def _check_norm_name(name, key: str) -> None:
    try:
        resolve_norm(name)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: {e}") from None


def _groups(cfg: CfgNode, norm: str) -> Optional[Tuple[int, str]]:
    """(groups, where it comes from) of a group-wise norm, else None."""
    if norm_uses_groups(norm):
        return cfg.MODEL.SEPH.EVONORM.GROUPS, "MODEL.SEPH.EVONORM.GROUPS"
    if norm == "GN":
        return 32, "detectron2's GN groups"
    return None


def _check_divisible(cfg: CfgNode, norm: str, norm_key: str, width: int, width_key: str) -> None:
    groups = _groups(cfg, norm)
    if groups is not None and width % groups[0] != 0:
        raise ValueError(
            f"{width_key}={width} is not divisible by {groups[0]} ({groups[1]}), which "
            f"{norm_key}={norm!r} needs."
        )


def _check_evonorm(cfg: CfgNode) -> None:
    node = cfg.MODEL.SEPH.EVONORM
    groups, eps = node.GROUPS, node.EPS
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"MODEL.SEPH.EVONORM.GROUPS={groups!r}; expected a positive int.")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
        raise ValueError(f"MODEL.SEPH.EVONORM.EPS={eps!r}; expected a positive number.")


def _check_fpn(cfg: CfgNode) -> None:
    # Imported here: the config package must stay importable without the model package.
    from sephnet.modeling.backbone.seph_fpn import TOP_BLOCKS

    norm = cfg.MODEL.FPN.NORM
    _check_norm_name(norm, "MODEL.FPN.NORM")
    backbone = cfg.MODEL.BACKBONE.NAME
    seph_backbone = backbone.startswith(_SEPH_BACKBONE_PREFIX)
    if is_sephnet_norm(norm) and not seph_backbone:
        raise ValueError(
            f"MODEL.FPN.NORM={norm!r} is a sephnet norm; it needs a sephnet backbone builder "
            f"(MODEL.BACKBONE.NAME starting with {_SEPH_BACKBONE_PREFIX!r}, e.g. "
            f"'build_seph_resnet_fpn_backbone'), got MODEL.BACKBONE.NAME={backbone!r}."
        )
    if seph_backbone:
        _check_divisible(
            cfg, norm, "MODEL.FPN.NORM", cfg.MODEL.FPN.OUT_CHANNELS, "MODEL.FPN.OUT_CHANNELS"
        )

    node = cfg.MODEL.SEPH.FPN
    if node.TOP_BLOCK not in TOP_BLOCKS:
        raise ValueError(
            f"MODEL.SEPH.FPN.TOP_BLOCK={node.TOP_BLOCK!r}; expected one of {list(TOP_BLOCKS)}."
        )
    if node.TOP_BLOCK != _DEFAULT_TOP_BLOCK and not seph_backbone:
        raise ValueError(
            f"MODEL.SEPH.FPN.TOP_BLOCK={node.TOP_BLOCK!r} is only read by sephnet backbone "
            f"builders (MODEL.BACKBONE.NAME starting with {_SEPH_BACKBONE_PREFIX!r}), got "
            f"MODEL.BACKBONE.NAME={backbone!r}."
        )
    levels = node.TOP_BLOCK_NUM_LEVELS
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(
            f"MODEL.SEPH.FPN.TOP_BLOCK_NUM_LEVELS={levels!r}; expected an int >= 1."
        )


def _check_mask_head(cfg: CfgNode) -> None:
    head = cfg.MODEL.ROI_MASK_HEAD
    _check_norm_name(head.NORM, "MODEL.ROI_MASK_HEAD.NORM")
    if not cfg.MODEL.MASK_ON:
        return
    seph_head = head.NAME.startswith(_SEPH_MASK_HEAD_PREFIX)
    if is_sephnet_norm(head.NORM) and not seph_head:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.NORM={head.NORM!r} is a sephnet norm; it needs a sephnet mask "
            f"head (MODEL.ROI_MASK_HEAD.NAME 'SephMaskRCNNConvUpsampleHead'), got "
            f"MODEL.ROI_MASK_HEAD.NAME={head.NAME!r}."
        )
    if seph_head:
        _check_divisible(
            cfg,
            head.NORM,
            "MODEL.ROI_MASK_HEAD.NORM",
            head.CONV_DIM,
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
        )


def _check_rpn_head(cfg: CfgNode) -> None:
    norm = cfg.MODEL.SEPH.RPN_HEAD.NORM
    _check_norm_name(norm, "MODEL.SEPH.RPN_HEAD.NORM")
    head_name = cfg.MODEL.RPN.HEAD_NAME
    if head_name != _SEPH_RPN_HEAD:
        if norm != "":
            raise ValueError(
                f"MODEL.SEPH.RPN_HEAD.NORM={norm!r} is only read by SephRPNHead; set "
                f"MODEL.RPN.HEAD_NAME={_SEPH_RPN_HEAD!r} (got {head_name!r}) or leave the norm ''."
            )
        return
    conv_dims = list(cfg.MODEL.RPN.CONV_DIMS)
    if len(conv_dims) != 1:
        raise ValueError(
            f"MODEL.RPN.CONV_DIMS={conv_dims!r}: {_SEPH_RPN_HEAD} has one shared conv; expected "
            "a single entry ([-1] keeps the input channels)."
        )
    if conv_dims[0] == -1:
        # The head's input is the FPN, whose channels are FPN.OUT_CHANNELS.
        width, width_key = cfg.MODEL.FPN.OUT_CHANNELS, "MODEL.FPN.OUT_CHANNELS (RPN input)"
    else:
        width, width_key = conv_dims[0], "MODEL.RPN.CONV_DIMS[0]"
    _check_divisible(cfg, norm, "MODEL.SEPH.RPN_HEAD.NORM", width, width_key)


def validate_config(cfg: CfgNode) -> None:
    """Check the norm keys and where sephnet-only norm names may appear.

    Validated: EVONORM.GROUPS is a positive int and EPS a positive number; MODEL.FPN.NORM,
    MODEL.ROI_MASK_HEAD.NORM and MODEL.SEPH.RPN_HEAD.NORM are known norm names; a sephnet
    norm (EvoNormS0) in MODEL.FPN.NORM needs a Seph backbone builder, in
    MODEL.ROI_MASK_HEAD.NORM (with MASK_ON) a Seph mask head; MODEL.RESNETS.NORM is not a
    sephnet norm (the ResNet is detectron2's); MODEL.SEPH.RPN_HEAD.NORM needs SephRPNHead,
    which needs a single MODEL.RPN.CONV_DIMS entry; MODEL.SEPH.FPN.TOP_BLOCK is a known block
    used with a Seph backbone, TOP_BLOCK_NUM_LEVELS >= 1; the channels every group-wise norm
    of these Seph components normalises are divisible by its groups (EvoNormS0:
    MODEL.SEPH.EVONORM.GROUPS; GN: 32).

    Raises:
        ValueError: naming the offending keys and values.
    """
    _check_evonorm(cfg)
    resnet_norm = cfg.MODEL.RESNETS.NORM
    if is_sephnet_norm(resnet_norm):
        raise ValueError(
            f"MODEL.RESNETS.NORM={resnet_norm!r} is a sephnet norm, but the ResNet is "
            "detectron2's, whose get_norm does not know it; use one of detectron2's norms there."
        )
    _check_fpn(cfg)
    _check_mask_head(cfg)
    _check_rpn_head(cfg)
