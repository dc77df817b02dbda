"""Keys of the multi-scale ROI pooler: ``MODEL.SEPH.MULTISCALE_POOLER.*``
(docs/components.md#roi-pooling).

With it on, ``SephStandardROIHeads`` pools a box crop (``MODEL.ROI_BOX_HEAD.POOLER_*``) and a
context crop of each ROI (see :mod:`sephnet.modeling.roi_heads.poolers.multiscale_pooler`). Who reads
the pair:

* a context-attention head (``BoxQueryAttentionHead`` V5, ``ContextQueryAttentionHead`` V6,
  ``ContextStripAttentionHead`` V7), with no ROI hook;
* ``IouHeadNonLocalROIHeadsHook`` (iou5) in front of a decoupled head;
* any other decoupled sephnet head, positionally (sephv19: "FCClsConvBoxHead" with the cls
  tower on the box crop and the box tower on the context crop), which needs
  CONTEXT_RESOLUTION == MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION (the 1.5x / 7x7 version).
"""
from sephnet.backend import CfgNode
from sephnet.config._checks import check_int_at_least
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY, SEPH_ROI_HOOK_REGISTRY, get_registered

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.MULTISCALE_POOLER"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.MULTISCALE_POOLER.*`` (default off)."""
    node = cfg.MODEL.SEPH.MULTISCALE_POOLER = CfgNode()
    # Pool a context crop as well as the box crop (log sephv19: FCClsConvBoxHead with the cls
    # tower on the box crop and the box tower on the context crop; sephv25/25_1/25_2: the
    # V5/V6/V7 context-attention heads; iou5: IouHeadNonLocalROIHeadsHook).
    node.ENABLED = False
    # The context box's size relative to the box (float > 1), scaled about the box centre,
    # not clipped. Pooler up to 2020-10-29: 1.5 (sephv19, sephv25, sephv25_1; the only one
    # the V5/V6 heads type-check with); from 2020-10-30: 13/7 = 1.857142857142857
    # (sephv25_2, iou5).
    node.CONTEXT_SCALE = 1.5
    # Output size M of the context crop (M x M; int >= 1). 7 with CONTEXT_SCALE 1.5; 13 with
    # 13/7 (the same sampling density as the 7x7 box crop).
    node.CONTEXT_RESOLUTION = 7


def validate_config(cfg: CfgNode) -> None:
    """Check the pooler keys and that the box head / hook can read the crop pair.

    What the box head and hook read is declared on their classes (``input_kind``,
    ``reads_decoupled``; a hook's ``reads_context_pair``).

    Raises:
        ValueError: naming the offending keys and values.
    """
    node = cfg.MODEL.SEPH.MULTISCALE_POOLER
    scale, res = node.CONTEXT_SCALE, node.CONTEXT_RESOLUTION
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 1:
        raise ValueError(f"{_KEY}.CONTEXT_SCALE={scale!r}; expected a number > 1.")
    check_int_at_least(res, f"{_KEY}.CONTEXT_RESOLUTION", 1)
    head = cfg.MODEL.SEPH.BOX_HEAD.NAME  # registered: box_head.py validated it
    head_cls = SEPH_BOX_HEAD_REGISTRY.get(head)
    reads_pair = head_cls.input_kind == "context_pair"
    if not node.ENABLED:
        if reads_pair:
            raise ValueError(
                f"MODEL.SEPH.BOX_HEAD.NAME={head!r} reads (box, context) crops; set "
                f"{_KEY}.ENABLED=True."
            )
        return
    roi_heads = cfg.MODEL.ROI_HEADS.NAME
    if roi_heads != "SephStandardROIHeads":
        raise ValueError(
            f"{_KEY}.ENABLED=True is used by SephStandardROIHeads only; "
            f"MODEL.ROI_HEADS.NAME={roi_heads!r}."
        )
    hook = cfg.MODEL.SEPH.ROI_HOOK.NAME
    if reads_pair and hook:
        raise ValueError(
            f"MODEL.SEPH.BOX_HEAD.NAME={head!r} reads the pooler's (box, context) crops "
            f"directly; MODEL.SEPH.ROI_HOOK.NAME={hook!r} must be ''."
        )
    if not reads_pair and not head_cls.reads_decoupled:
        pair_heads = sorted(n for n, c in SEPH_BOX_HEAD_REGISTRY if c.input_kind == "context_pair")
        raise ValueError(
            f"{_KEY}.ENABLED=True gives (box, context) crops that MODEL.SEPH.BOX_HEAD.NAME="
            f"{head!r} cannot read; expected a decoupled head (e.g. 'FCClsConvBoxHead', "
            f"sephv19) or one of {pair_heads}."
        )
    resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    hook_reads_pair = bool(hook) and get_registered(
        SEPH_ROI_HOOK_REGISTRY, hook, "MODEL.SEPH.ROI_HOOK.NAME"
    ).reads_context_pair
    if not reads_pair and not hook_reads_pair and res != resolution:
        raise ValueError(
            f"MODEL.SEPH.BOX_HEAD.NAME={head!r} runs its box tower on the context crop, so "
            f"{_KEY}.CONTEXT_RESOLUTION={res} must equal MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION="
            f"{resolution} (sephv19 used the 1.5x / 7x7 pooler)."
        )
