"""Keys of the backbone hooks (docs/components.md#backbone-hooks): ``MODEL.SEPH.BACKBONE_HOOKS.*``.

Hooks are read by sephnet's hooked backbone builders (``build_seph_tf_fpn_backbone``,
``build_seph_bifpn_backbone``, ``build_seph_two_way_fpn_backbone``,
``build_seph_hooked_fpn_backbone``); see ``sephnet/modeling/backbone/hooked_backbone.py``.
"""
from sephnet.backend import CfgNode
from sephnet.config._checks import check_int_at_least
from sephnet.layers.norm import resolve_norm

__all__ = ["add_config", "validate_config", "HOOKED_BACKBONES"]

# Backbone builders that read MODEL.SEPH.BACKBONE_HOOKS.{BEFORE,AFTER,RPN}.
HOOKED_BACKBONES = (
    "build_seph_hooked_fpn_backbone",
    "build_seph_tf_fpn_backbone",
    "build_seph_bifpn_backbone",
    "build_seph_two_way_fpn_backbone",
    "build_seph_pafpn_backbone",
    "build_seph_nas_fpn_backbone",
    "build_seph_asff_backbone",
)
_SEPH_META_ARCH = "SephGeneralizedRCNN"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.BACKBONE_HOOKS.*``."""
    node = cfg.MODEL.SEPH.BACKBONE_HOOKS = CfgNode()
    # Hook applied to the bottom-up maps (res2..res5 and extra levels such as res6) before
    # the neck: a name in SEPH_BACKBONE_HOOK_REGISTRY or "" (none). Log: NonLocalBackboneHook
    # (June "use nolocal", recipe 1), sephv14_19/31/32, bifpnv2_1), SEBackboneHook
    # (sephv14_26/27). Not available with build_seph_hooked_fpn_backbone (detectron2's FPN runs
    # its bottom-up internally).
    node.BEFORE = ""
    # Hook applied to the neck outputs (p3..p6), seen by the RPN and the ROI heads: a
    # registered name or "". Log: FusionBackboneHook (adds "f3"; sephv14_32/33/40-44, bifpnv2,
    # recipe 1)), BalanceBackboneHook (sephv14_3/4, bifpn v1_1, recipe 2)).
    node.AFTER = ""
    # Hook applied only to the neck outputs the RPN sees (the ROI heads get them unhooked):
    # a registered name or "". Needs MODEL.META_ARCHITECTURE "SephGeneralizedRCNN". Log:
    # BalanceBackboneHook V1 = the log's BalanceBackboneHookV3 (sephv26), and the two-way FPN's
    # FPN_a hook (wtwfpn v1/v1_1).
    node.RPN = ""
    # Norm of the hooks' convs ("current"/"V2" non-local, fusion, balance); a NORM name of
    # resolve_norm, "" = none. "EvoNormS0" in every log row (groups/eps: MODEL.SEPH.EVONORM).
    node.NORM = "EvoNormS0"
    # First pyramid level the non-local and SE hooks transform (int >= 2); lower levels pass
    # through. 4 in the log (C4/P4 and coarser).
    node.MIN_LEVEL = 4
    node.NON_LOCAL = CfgNode()
    # NonLocalBackboneHook version: "current" (from 2020-10-30: Q/K/V full width, 1 head, plain
    # residual, NORM, no act; sephv14_13/19/31/32, sephv30_1, bifpnv2_1), "old" (June rows:
    # widths C/8, C/8, C/2, gamma residual init 0, GroupNorm(32) + ReLU), "V2" (128/128/128,
    # 2 heads, plain residual, NORM).
    node.NON_LOCAL.VERSION = "current"
    node.SE = CfgNode()
    # SEBackboneHook hidden-width reduction (int >= 1): 16 in the log.
    node.SE.RATIO = 16
    node.FUSION = CfgNode()
    # FusionBackboneHook version: "V1" (concat, f3 has 2x the pyramid channels, e.g. 512),
    # "V2" (concat, same channels; sephv14_43*), "V3" (sum, same channels).
    node.FUSION.VERSION = "V1"
    node.BALANCE = CfgNode()
    # BalanceBackboneHook version: "V1" (sephv14_4) or "V2" (sephv14_3: also concatenates a
    # 1x1 projection of the same-stride bottom-up map, doubling every level's channels; needs
    # a sephnet neck builder). The log's V3 is "V1" set as the RPN hook.
    node.BALANCE.VERSION = "V1"
    # Index (finest level first) of the level whose size the balance hook averages at
    # (int >= 0): 1 in the log (P4 for P3..P6).
    node.BALANCE.REFERENCE_INDEX = 1


def _registered_names():
    # Imported here: the config package must stay importable without the model package.
    from sephnet.modeling.backbone import hooks  # noqa: F401  (registers the hooks)
    from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

    return sorted(name for name, _ in SEPH_BACKBONE_HOOK_REGISTRY)


def validate_config(cfg: CfgNode) -> None:
    """Check hook names, versions, numbers, and that hooks are used with a builder reading them.

    Raises:
        ValueError: naming the offending keys and values.
    """
    from sephnet.modeling.backbone.hooks import BALANCE_VERSIONS, FUSION_VERSIONS
    from sephnet.modeling.backbone.hooks import NON_LOCAL_VERSIONS

    node = cfg.MODEL.SEPH.BACKBONE_HOOKS
    names = _registered_names()
    backbone = cfg.MODEL.BACKBONE.NAME
    for place in ("BEFORE", "AFTER", "RPN"):
        name = node[place]
        if name == "":
            continue
        if name not in names:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.{place}={name!r} is not registered in "
                f"SEPH_BACKBONE_HOOK; available: {', '.join(names)} ('' = none)."
            )
        if backbone not in HOOKED_BACKBONES:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.{place}={name!r} needs a hooked backbone builder "
                f"(MODEL.BACKBONE.NAME one of {list(HOOKED_BACKBONES)}), got {backbone!r}."
            )
    if node.BEFORE and backbone == "build_seph_hooked_fpn_backbone":
        raise ValueError(
            f"MODEL.SEPH.BACKBONE_HOOKS.BEFORE={node.BEFORE!r} cannot wrap detectron2's FPN "
            "(MODEL.BACKBONE.NAME 'build_seph_hooked_fpn_backbone'), which runs its bottom-up "
            "internally; use 'build_seph_tf_fpn_backbone'."
        )
    if node.AFTER and backbone == "build_seph_two_way_fpn_backbone":
        raise ValueError(
            f"MODEL.SEPH.BACKBONE_HOOKS.AFTER={node.AFTER!r} cannot follow the two-way FPN "
            "(MODEL.BACKBONE.NAME 'build_seph_two_way_fpn_backbone'): its RPN pyramid takes the "
            "RPN hook (MODEL.SEPH.BACKBONE_HOOKS.RPN) and its ROI pyramid none."
        )
    if node.RPN and cfg.MODEL.META_ARCHITECTURE != _SEPH_META_ARCH:
        raise ValueError(
            f"MODEL.SEPH.BACKBONE_HOOKS.RPN={node.RPN!r} gives the RPN its own features; it "
            f"needs MODEL.META_ARCHITECTURE={_SEPH_META_ARCH!r}, got "
            f"{cfg.MODEL.META_ARCHITECTURE!r}."
        )
    if node.RPN == "BalanceBackboneHook" and node.BALANCE.VERSION == "V2":
        raise ValueError(
            "MODEL.SEPH.BACKBONE_HOOKS.RPN='BalanceBackboneHook' with BALANCE.VERSION='V2' would "
            "give the RPN twice the channels of the ROI heads; use VERSION 'V1' there."
        )
    try:
        resolve_norm(node.NORM)
    except (TypeError, ValueError) as e:
        raise ValueError(f"MODEL.SEPH.BACKBONE_HOOKS.NORM: {e}") from None
    for key, value, allowed in (
        ("NON_LOCAL.VERSION", node.NON_LOCAL.VERSION, NON_LOCAL_VERSIONS),
        ("FUSION.VERSION", node.FUSION.VERSION, FUSION_VERSIONS),
        ("BALANCE.VERSION", node.BALANCE.VERSION, BALANCE_VERSIONS),
    ):
        if value not in allowed:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.{key}={value!r}; expected one of {sorted(allowed)}."
            )
    check_int_at_least(node.MIN_LEVEL, "MODEL.SEPH.BACKBONE_HOOKS.MIN_LEVEL", 2)
    check_int_at_least(node.SE.RATIO, "MODEL.SEPH.BACKBONE_HOOKS.SE.RATIO", 1)
    check_int_at_least(
        node.BALANCE.REFERENCE_INDEX, "MODEL.SEPH.BACKBONE_HOOKS.BALANCE.REFERENCE_INDEX", 0
    )
