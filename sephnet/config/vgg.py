"""Keys of SSD's VGG16 base ``build_seph_vgg16_backbone``: ``MODEL.SEPH.VGG.*`` (docs/ssd.md).

Read when ``MODEL.BACKBONE.NAME`` or ``MODEL.SEPH.SSD.BASE_BACKBONE`` is
``"build_seph_vgg16_backbone"``; defaults are VGG16's.
"""
from sephnet.backend import CfgNode

from ._checks import check_int_at_least, component_defaults, non_default_keys

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.VGG"
_NAME = "build_seph_vgg16_backbone"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.VGG.*`` (VGG16's widths, SSD's fc6/fc7 and conv4_3 L2Norm)."""
    cfg.MODEL.SEPH.VGG = CfgNode()
    vgg = cfg.MODEL.SEPH.VGG
    # Output channels of the convs of the five stages (2, 2, 3, 3, 3 convs), ints >= 1.
    vgg.WIDTHS = [64, 128, 256, 512, 512]
    # Output channels of fc6 (3x3 dilated conv) and fc7 (1x1 conv), an int >= 1.
    vgg.FC_WIDTH = 1024
    # Dilation (and padding) of fc6, an int >= 1 (SSD: 6).
    vgg.FC6_DILATION = 6
    # Initial per-channel scale of the L2Norm on conv4_3 (> 0; SSD: 20).
    vgg.L2NORM_SCALE = 20.0
    # Norm after every conv ("" = none, as VGG16; "BN" = VGG16-BN; "GN", ...).
    vgg.NORM = ""


def validate_config(cfg: CfgNode) -> None:
    """Check ``MODEL.SEPH.VGG.*``: read only with the VGG base selected; widths and dilation are
    ints >= 1, the scale > 0, the norm a known name.

    Raises:
        ValueError: naming the offending keys and values.
    """
    from sephnet.layers.norm import valid_norm_names

    vgg = cfg.MODEL.SEPH.VGG
    backbone = cfg.MODEL.BACKBONE.NAME
    selected = backbone == _NAME or (
        backbone == "build_seph_ssd_backbone" and cfg.MODEL.SEPH.SSD.BASE_BACKBONE == _NAME
    )
    changed = non_default_keys(vgg, component_defaults(add_config, "VGG"))
    if changed and not selected:
        raise ValueError(
            f"{', '.join(f'{_KEY}.{k}' for k in changed)} set, but the VGG16 base is not used "
            f"(MODEL.BACKBONE.NAME or, under build_seph_ssd_backbone, MODEL.SEPH.SSD.BASE_BACKBONE "
            f"must be '{_NAME}')."
        )
    if len(vgg.WIDTHS) != 5:
        raise ValueError(f"{_KEY}.WIDTHS={list(vgg.WIDTHS)!r}; expected 5 ints >= 1 (one per stage).")
    for width in vgg.WIDTHS:
        check_int_at_least(width, f"{_KEY}.WIDTHS entry", 1)
    check_int_at_least(vgg.FC_WIDTH, f"{_KEY}.FC_WIDTH", 1)
    check_int_at_least(vgg.FC6_DILATION, f"{_KEY}.FC6_DILATION", 1)
    scale = vgg.L2NORM_SCALE
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"{_KEY}.L2NORM_SCALE={scale!r}; expected a number > 0.")
    if vgg.NORM not in valid_norm_names():
        raise ValueError(f"{_KEY}.NORM={vgg.NORM!r}; expected one of {valid_norm_names()}.")
