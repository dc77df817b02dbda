"""Keys of sephnet's necks (docs/components.md#fpn): ``MODEL.SEPH.NECKS.*``.

The necks reuse the upstream keys whose meaning is the same: ``MODEL.FPN.IN_FEATURES`` (the
neck's inputs), ``MODEL.FPN.OUT_CHANNELS``, ``MODEL.FPN.NORM`` and ``MODEL.FPN.FUSE_TYPE``
(detectron2 allows "sum"/"avg"; the TF-style and two-way FPNs also accept "concat",
"mix_fusion" and "wsum"). Builders (``MODEL.BACKBONE.NAME``): ``build_seph_tf_fpn_backbone``
(the log's FPN), ``build_seph_bifpn_backbone``, ``build_seph_two_way_fpn_backbone`` (needs
``MODEL.META_ARCHITECTURE: SephGeneralizedRCNN``).
"""
from sephnet.backend import CfgNode
from sephnet.config._checks import check_int_at_least

__all__ = ["add_config", "validate_config", "NECK_BACKBONES"]

NECK_BACKBONES = (
    "build_seph_tf_fpn_backbone",
    "build_seph_bifpn_backbone",
    "build_seph_two_way_fpn_backbone",
    # the detectors' necks (keys in pyramid_necks.py)
    "build_seph_pafpn_backbone",
    "build_seph_nas_fpn_backbone",
    "build_seph_asff_backbone",
)
_TWO_WAY = "build_seph_two_way_fpn_backbone"
_BIFPN = "build_seph_bifpn_backbone"
_UPSTREAM_FUSE_TYPES = ("sum", "avg")


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.NECKS.*``."""
    node = cfg.MODEL.SEPH.NECKS = CfgNode()
    # Extra bottom-up levels (int >= 0) made before the before-hook and the neck by 3x3
    # stride-2 convs + MODEL.FPN.NORM chained from the coarsest ResNet output (res5), named
    # res6, res7, ... (the log's RESNETS.MAKE_C6C7 "C6" = 1). Read by the sephnet neck builders.
    # 1 for the log's BiFPN and two-way FPN rows (inputs C3..C6) and for sephv14_3/4 (C3-C6).
    node.EXTRA_LEVELS = 0
    # Channels of the extra levels (int >= 1); the log's RESNETS.OUT_CHANNELS, 256.
    node.EXTRA_LEVEL_CHANNELS = 256
    node.TF_FPN = CfgNode()
    # Levels the TF-style FPN adds above its last input by 3x3 stride-2 convs + MODEL.FPN.NORM
    # starting from the raw last input (int >= 0): 1 = the log's "P6 from C5" (every sephv*
    # config on C3-C5 or C2-C5); 0 when the inputs already include res6 (two-way FPN, C3-C6).
    node.TF_FPN.NUM_TOP_LEVELS = 1
    # FUSE_TYPE "mix_fusion" only: channels carrying the lateral alone (0 < it <
    # MODEL.FPN.OUT_CHANNELS); 32 in sephv14_8.
    node.TF_FPN.MIX_FUSION_CHANNELS = 32
    node.BIFPN = CfgNode()
    # Repeated BiFPN cells (int >= 1): 2 in bifpn v1/v1_1 (128 channels), 1 in bifpn v2* (256).
    node.BIFPN.NUM_CELLS = 1
    node.BIFPN.ACTIVATION = CfgNode()
    # ReLU between each fast normalised fusion and its 3x3 conv: off in the log (activation NA).
    node.BIFPN.ACTIVATION.ENABLED = False
    # Padding of the input images (pixels; a multiple of the coarsest BiFPN input stride) so
    # that every level is exactly twice the next: 128 in the log's BiFPN configs (SIZE_ALIGN).
    node.BIFPN.SIZE_DIVISIBILITY = 128


def validate_config(cfg: CfgNode) -> None:
    """Check the neck keys and their combination with the backbone builder and meta-arch.

    Raises:
        ValueError: naming the offending keys and values.
    """
    from sephnet.modeling.backbone.tf_fpn import FUSE_TYPES

    node = cfg.MODEL.SEPH.NECKS
    backbone = cfg.MODEL.BACKBONE.NAME
    check_int_at_least(node.EXTRA_LEVELS, "MODEL.SEPH.NECKS.EXTRA_LEVELS", 0)
    check_int_at_least(node.EXTRA_LEVEL_CHANNELS, "MODEL.SEPH.NECKS.EXTRA_LEVEL_CHANNELS", 1)
    check_int_at_least(node.TF_FPN.NUM_TOP_LEVELS, "MODEL.SEPH.NECKS.TF_FPN.NUM_TOP_LEVELS", 0)
    check_int_at_least(node.BIFPN.NUM_CELLS, "MODEL.SEPH.NECKS.BIFPN.NUM_CELLS", 1)
    check_int_at_least(node.BIFPN.SIZE_DIVISIBILITY, "MODEL.SEPH.NECKS.BIFPN.SIZE_DIVISIBILITY", 1)
    fuse = cfg.MODEL.FPN.FUSE_TYPE
    neck = backbone in NECK_BACKBONES
    if node.EXTRA_LEVELS and not neck:
        raise ValueError(
            f"MODEL.SEPH.NECKS.EXTRA_LEVELS={node.EXTRA_LEVELS} is read only by sephnet neck "
            f"builders {list(NECK_BACKBONES)}; got MODEL.BACKBONE.NAME={backbone!r}."
        )
    if fuse not in FUSE_TYPES:
        raise ValueError(f"MODEL.FPN.FUSE_TYPE={fuse!r}; expected one of {list(FUSE_TYPES)}.")
    tf_style = backbone in ("build_seph_tf_fpn_backbone", _TWO_WAY)
    if fuse not in _UPSTREAM_FUSE_TYPES and not tf_style:
        raise ValueError(
            f"MODEL.FPN.FUSE_TYPE={fuse!r} needs the TF-style FPN (MODEL.BACKBONE.NAME "
            f"'build_seph_tf_fpn_backbone' or {_TWO_WAY!r}); {backbone!r} accepts "
            f"{list(_UPSTREAM_FUSE_TYPES)}."
        )
    mix = node.TF_FPN.MIX_FUSION_CHANNELS
    if fuse == "mix_fusion" and not 0 < mix < cfg.MODEL.FPN.OUT_CHANNELS:
        raise ValueError(
            f"MODEL.SEPH.NECKS.TF_FPN.MIX_FUSION_CHANNELS={node.TF_FPN.MIX_FUSION_CHANNELS!r}; "
            f"expected 0 < it < MODEL.FPN.OUT_CHANNELS={cfg.MODEL.FPN.OUT_CHANNELS}."
        )
    if neck:
        last = max(
            (int(f[3:]) for f in cfg.MODEL.RESNETS.OUT_FEATURES if f[3:].isdigit()), default=0
        )
        available = list(cfg.MODEL.RESNETS.OUT_FEATURES) + [
            f"res{last + k}" for k in range(1, node.EXTRA_LEVELS + 1)
        ]
        missing = [f for f in cfg.MODEL.FPN.IN_FEATURES if f not in available]
        if missing:
            raise ValueError(
                f"MODEL.FPN.IN_FEATURES={list(cfg.MODEL.FPN.IN_FEATURES)} names {missing}, not in "
                f"MODEL.RESNETS.OUT_FEATURES plus the MODEL.SEPH.NECKS.EXTRA_LEVELS "
                f"({available})."
            )
    if backbone == _BIFPN and len(cfg.MODEL.FPN.IN_FEATURES) < 2:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={list(cfg.MODEL.FPN.IN_FEATURES)}: the BiFPN needs >= 2 inputs."
        )
    if backbone == _TWO_WAY:
        if cfg.MODEL.META_ARCHITECTURE != "SephGeneralizedRCNN":
            raise ValueError(
                f"MODEL.BACKBONE.NAME={_TWO_WAY!r} returns two feature dicts; it needs "
                f"MODEL.META_ARCHITECTURE='SephGeneralizedRCNN', got "
                f"{cfg.MODEL.META_ARCHITECTURE!r}."
            )
        if cfg.MODEL.SEPH.BACKBONE_HOOKS.AFTER:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.AFTER={cfg.MODEL.SEPH.BACKBONE_HOOKS.AFTER!r} is not "
                f"used with {_TWO_WAY!r}: the RPN FPN's hook is MODEL.SEPH.BACKBONE_HOOKS.RPN, the "
                "ROI FPN has none (as in the log)."
            )
