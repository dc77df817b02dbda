"""Keys of the DetNet-59 backbone (``build_seph_detnet_backbone``, ``build_seph_detnet_fpn_backbone``).

The trunk reads detectron2's ``MODEL.RESNETS`` keys with their meaning (NORM,
STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, STRIDE_IN_1X1, OUT_FEATURES) and
``MODEL.BACKBONE.FREEZE_AT``; the FPN variant reads ``MODEL.FPN.IN_FEATURES / OUT_CHANNELS /
NORM``. The dilated stages' widths are here.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config", "DETNET_BACKBONES"]

DETNET_BACKBONES = ("build_seph_detnet_backbone", "build_seph_detnet_fpn_backbone")
_DEFAULTS = {"BOTTLENECK_CHANNELS": 256, "OUT_CHANNELS": 1024}
_STAGES = ("stem", "res2", "res3", "res4", "res5", "res6")


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.DETNET.*`` (defaults: DetNet-59)."""
    cfg.MODEL.SEPH.DETNET = CfgNode()
    # Bottleneck (dilated 3x3 conv) width of the stride-16 stages res5 and res6: the paper's
    # fixed 256 (int >= 1).
    cfg.MODEL.SEPH.DETNET.BOTTLENECK_CHANNELS = _DEFAULTS["BOTTLENECK_CHANNELS"]
    # Output width of res5 and res6 (int >= 1): 4 x the bottleneck, as ResNet bottlenecks.
    cfg.MODEL.SEPH.DETNET.OUT_CHANNELS = _DEFAULTS["OUT_CHANNELS"]


def validate_config(cfg: CfgNode) -> None:
    """Raise ValueError for DetNet keys set without a DetNet backbone, bad widths, or ResNet
    keys DetNet-59 cannot honour (depth other than 50, groups, res5 dilation, deformable)."""
    node, backbone = cfg.MODEL.SEPH.DETNET, cfg.MODEL.BACKBONE.NAME
    if backbone not in DETNET_BACKBONES:
        changed = [k for k, v in _DEFAULTS.items() if node[k] != v]
        if changed:
            raise ValueError(
                f"MODEL.SEPH.DETNET.{changed[0]}={node[changed[0]]!r} is read only by "
                f"MODEL.BACKBONE.NAME in {list(DETNET_BACKBONES)}, got {backbone!r}."
            )
        return
    for key in _DEFAULTS:
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"MODEL.SEPH.DETNET.{key}={value!r}; expected an int >= 1.")
    res = cfg.MODEL.RESNETS
    if res.DEPTH != 50 or res.NUM_GROUPS != 1 or res.RES5_DILATION != 1 or any(res.DEFORM_ON_PER_STAGE):
        raise ValueError(
            f"{backbone} builds DetNet-59 (a ResNet-50 trunk): it needs MODEL.RESNETS.DEPTH=50, "
            f"NUM_GROUPS=1, RES5_DILATION=1 and no DEFORM_ON_PER_STAGE; got DEPTH={res.DEPTH}, "
            f"NUM_GROUPS={res.NUM_GROUPS}, RES5_DILATION={res.RES5_DILATION}, "
            f"DEFORM_ON_PER_STAGE={list(res.DEFORM_ON_PER_STAGE)}."
        )
    names = cfg.MODEL.FPN.IN_FEATURES if backbone.endswith("fpn_backbone") else res.OUT_FEATURES
    key = "MODEL.FPN.IN_FEATURES" if backbone.endswith("fpn_backbone") else "MODEL.RESNETS.OUT_FEATURES"
    bad = [n for n in names if n not in _STAGES]
    if bad or not names:
        raise ValueError(f"{key}={list(names)}: DetNet stages are {list(_STAGES)}.")
