"""Keys of the detectors' necks and of SPP: ``MODEL.SEPH.NAS_FPN``, ``MODEL.SEPH.ASFF``,
``MODEL.SEPH.SPP``.

The necks (``build_seph_pafpn_backbone``, ``build_seph_nas_fpn_backbone``,
``build_seph_asff_backbone``) read ``MODEL.FPN.IN_FEATURES / OUT_CHANNELS / NORM`` with their
upstream meaning and ``MODEL.SEPH.NECKS.EXTRA_LEVELS`` for inputs above res5 (res6, res7);
``SPPBackboneHook`` is chosen like any backbone hook (``MODEL.SEPH.BACKBONE_HOOKS.BEFORE``)
and its 1x1 conv uses ``MODEL.SEPH.BACKBONE_HOOKS.NORM``.
"""
from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_SPP = "SPPBackboneHook"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.{NAS_FPN,ASFF,SPP}.*``."""
    cfg.MODEL.SEPH.NAS_FPN = CfgNode()
    # Repetitions of the searched NAS-FPN stack (int >= 1): 7 in the paper's RetinaNet.
    cfg.MODEL.SEPH.NAS_FPN.NUM_STACKS = 7
    cfg.MODEL.SEPH.ASFF = CfgNode()
    # Channels of the per-source features that ASFF's fusion weights are computed from
    # (int >= 1): 16 in the paper.
    cfg.MODEL.SEPH.ASFF.WEIGHT_CHANNELS = 16
    cfg.MODEL.SEPH.SPP = CfgNode()
    # Pyramid level SPPBackboneHook pools (int >= 2): 5 = res5 / C5.
    cfg.MODEL.SEPH.SPP.LEVEL = 5
    # Kernel sizes of its stride-1 max-pools (odd ints >= 1): YOLOv4's [5, 9, 13].
    cfg.MODEL.SEPH.SPP.POOL_SIZES = [5, 9, 13]


def _uses_spp(cfg: CfgNode) -> bool:
    hooks = cfg.MODEL.SEPH.BACKBONE_HOOKS
    return _SPP in (hooks.BEFORE, hooks.AFTER, hooks.RPN)


def validate_config(cfg: CfgNode) -> None:
    """Raise ValueError for bad values, or keys changed for a model that does not read them."""
    node = cfg.MODEL.SEPH
    backbone = cfg.MODEL.BACKBONE.NAME
    checks = (
        ("NAS_FPN", "NUM_STACKS", 7, backbone == "build_seph_nas_fpn_backbone", f"MODEL.BACKBONE.NAME={backbone!r}"),
        ("ASFF", "WEIGHT_CHANNELS", 16, backbone == "build_seph_asff_backbone", f"MODEL.BACKBONE.NAME={backbone!r}"),
        ("SPP", "LEVEL", 5, _uses_spp(cfg), "no SPPBackboneHook in MODEL.SEPH.BACKBONE_HOOKS"),
    )
    for group, key, default, read, why in checks:
        value = node[group][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if group == "SPP" else 1):
            raise ValueError(f"MODEL.SEPH.{group}.{key}={value!r}; expected an int >= {2 if group == 'SPP' else 1}.")
        if not read and value != default:
            raise ValueError(f"MODEL.SEPH.{group}.{key}={value!r} is not read ({why}).")
    pools = list(node.SPP.POOL_SIZES)
    if not pools or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in pools):
        raise ValueError(f"MODEL.SEPH.SPP.POOL_SIZES={pools}; expected a non-empty list of odd ints >= 1.")
    if not _uses_spp(cfg) and pools != [5, 9, 13]:
        raise ValueError(f"MODEL.SEPH.SPP.POOL_SIZES={pools} is not read (no SPPBackboneHook in MODEL.SEPH.BACKBONE_HOOKS).")
    if backbone == "build_seph_nas_fpn_backbone" and len(cfg.MODEL.FPN.IN_FEATURES) != 5:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={list(cfg.MODEL.FPN.IN_FEATURES)}: NAS-FPN needs 5 levels "
            "(e.g. res3, res4, res5, res6, res7 with MODEL.SEPH.NECKS.EXTRA_LEVELS: 2)."
        )
