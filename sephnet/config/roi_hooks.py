"""Keys of the ROI-head hooks: ``MODEL.SEPH.ROI_HOOK.*`` (docs/components.md#roi-hooks).

A hook transforms the pooled ROI features before the box head of ``SephStandardROIHeads``
(see :mod:`sephnet.modeling.roi_heads.hooks.roi_hooks` for the hooks and their versions).
"""
from sephnet.backend import CfgNode
from sephnet.config._checks import check_int_at_least
from sephnet.layers.norm import resolve_norm
from sephnet.modeling.registry import SEPH_ROI_HOOK_REGISTRY, get_registered

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.ROI_HOOK"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.ROI_HOOK.*`` (default: no hook)."""
    node = cfg.MODEL.SEPH.ROI_HOOK = CfgNode()
    # The hook applied to the pooled ROI features (a name in SEPH_ROI_HOOK_REGISTRY; "" =
    # none). Log: NonLocalROIHeadsHook (sephv7, sephv14_7, sephv14_44), OneHeadNonLocal-
    # ROIHeadsHook (sephv14_14/17/18/19/31/32/42/43_2/43_3, sephv30_1, bifpnv2_1, wfpn v1_1),
    # ClsNonLocalROIHeadsHook (sephv14_15, sephv14_43_4), BoxNonLocalROIHeadsHook (sephv14_16),
    # IouHeadNonLocalROIHeadsHook (iou5, iou6), SEROIHeadsHook (sephv14_24),
    # OneHeadSEROIHeadsHook (sephv14_25, sephv14_27), OneHeadCBAMROIHeadsHook (sephv14_28),
    # ClsSEROIHeadsHook (not in the log).
    node.NAME = ""
    # The hook's version (int): OneHeadNonLocal 1 (8,8,2) | 2 (positional, 1,1,1, 4 heads;
    # sephv14_17, sephv14_43_3) | 3 (1,1,1, 1 head; sephv14_18); ClsNonLocal 1 | 2
    # (sephv14_43_4) | 3 (positional 2,2,2, 2 heads) | 4 (2 then x 2*SE); BoxNonLocal 1 | 2;
    # every other hook 1. Log default 1.
    node.VERSION = 1
    # Non-local hooks: True = y = norm(gamma * O + x) with a learnable gamma initialised to 0
    # (the blocks up to 2020-10-29: the log's row "nonlocal head hook (sephv14_7)");
    # False = y = norm(O + x) (the later code: the row "(no gamma scale)" and every other
    # ROI-hook row).
    # sephnet's choice: one key for all non-local hooks (the original had the switch inside
    # non_local_blockv1, shared by all of them).
    node.WEIGHTED_RESIDUAL = False
    # Norm after the non-local blocks' residual (a NORM name; "" = none). Log: EvoNormS0 with
    # G = 32 (groups/eps from MODEL.SEPH.EVONORM.*), no activation.
    node.NORM = "EvoNormS0"
    # Reduction of the SE / CBAM gates' hidden FC (int >= 1; hidden width C // SE_RATIO).
    # Log: 16.
    node.SE_RATIO = 16


def validate_config(cfg: CfgNode) -> None:
    """Check the hook keys.

    Validated: NAME is "" or registered; VERSION is one the hook has; NORM is a known norm;
    SE_RATIO an int >= 1; a hook needs a Seph ROI head, and a hook returning separate cls/box
    inputs (its ``output_kind``) needs a box head that reads them (its ``reads_decoupled``);
    with the multi-scale pooler on, only a hook that ``reads_context_pair`` (the IoU hook).

    Raises:
        ValueError: naming the offending keys and values.
    """
    from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY

    node = cfg.MODEL.SEPH.ROI_HOOK
    name = node.NAME
    check_int_at_least(node.SE_RATIO, f"{_KEY}.SE_RATIO", 1)
    try:
        resolve_norm(node.NORM)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{_KEY}.NORM: {e}") from None
    if not name:
        return
    hook = get_registered(SEPH_ROI_HOOK_REGISTRY, name, f"{_KEY}.NAME")
    if node.VERSION not in hook.versions:
        raise ValueError(
            f"{_KEY}.VERSION={node.VERSION!r} is not a version of {_KEY}.NAME={name!r}; "
            f"expected one of {hook.versions}."
        )
    roi_heads = cfg.MODEL.ROI_HEADS.NAME
    if roi_heads != "SephStandardROIHeads":
        raise ValueError(
            f"{_KEY}.NAME={name!r} is applied by SephStandardROIHeads only; "
            f"MODEL.ROI_HEADS.NAME={roi_heads!r}."
        )
    head = cfg.MODEL.SEPH.BOX_HEAD.NAME  # registered: box_head.py validated it
    if hook.output_kind == "decoupled" and not SEPH_BOX_HEAD_REGISTRY.get(head).reads_decoupled:
        raise ValueError(
            f"{_KEY}.NAME={name!r} gives the box head separate cls/box inputs, which "
            f"MODEL.SEPH.BOX_HEAD.NAME={head!r} cannot read; use a decoupled head "
            "(e.g. FCClsConvBoxHead) or a one-head hook."
        )
    if cfg.MODEL.SEPH.MULTISCALE_POOLER.ENABLED and not hook.reads_context_pair:
        readers = sorted(n for n, h in SEPH_ROI_HOOK_REGISTRY if h.reads_context_pair)
        raise ValueError(
            f"{_KEY}.NAME={name!r} reads one pooled map, but MODEL.SEPH.MULTISCALE_POOLER."
            f"ENABLED=True gives (box, context) crops; only {readers} (or no hook) read them."
        )
