"""Keys of the decoupled box heads: ``MODEL.SEPH.BOX_HEAD.*`` (SEPH_SPEC B §2.12).

The heads' norm reuses the upstream key ``MODEL.ROI_BOX_HEAD.NORM`` ("" = none; detectron2's
names; "EvoNormS0", whose groups/epsilon are ``MODEL.SEPH.EVONORM.*``). After a norm that has
its own non-linearity (EvoNormS0, the log's activation "NA") no ReLU is added; otherwise
every conv and FC is followed by a ReLU.
"""
from sephnet.backend import CfgNode
from sephnet.layers.norm import is_sephnet_norm, norm_uses_groups, resolve_norm
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY, get_registered

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.BOX_HEAD"
_UPSTREAM = "UpstreamBoxHead"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.BOX_HEAD.*`` with defaults (the upstream head, i.e. detectron2)."""
    cfg.MODEL.SEPH.BOX_HEAD = CfgNode()
    node = cfg.MODEL.SEPH.BOX_HEAD
    # Which decoupled box head the Seph ROI heads build (a name in SEPH_BOX_HEAD_REGISTRY):
    # "UpstreamBoxHead": detectron2's head from MODEL.ROI_BOX_HEAD.NAME/NUM_CONV/CONV_DIM/
    #   NUM_FC/FC_DIM/NORM, shared by classes and boxes; reads none of the keys below. The
    #   default, so a Seph ROI head with default keys equals detectron2 (log "base line").
    # "TwinTowerConvFCHead": two identical towers of NUM_CONV convs then NUM_FC FCs (log
    #   "seph": 4 conv 0 FC; "two 4xconv head" sephv14_34/37/40/41/44: 4 conv 0 FC;
    #   "two 2xfc head" sephv14_35/38: 0 conv 2 FC).
    # "FCClsConvBoxHead": cls tower NUM_FC FCs, box tower NUM_CONV convs, IoU tower when
    #   MODEL.SEPH.IOU_BRANCH.ENABLED (log "sephv2" and every sephv2-based row: sephv3..v22,
    #   sephv14*, iou1..7, the reference recipe sephv14_10).
    # "SharedConvHead": NUM_CONV shared convs of CONV_DIM, then a SAME cls conv and a VALID
    #   box conv of BRANCH_CONV_DIM (log "sephv10 (shared head)": 4 x 384, branches 256).
    node.NAME = _UPSTREAM
    # Number of 3x3 SAME convs (int >= 0): both towers of TwinTowerConvFCHead, the box tower
    # of FCClsConvBoxHead (>= 1), the shared convs of SharedConvHead. Log: 4 in every row
    # except the "two 2xfc head" rows (0).
    node.NUM_CONV = 4
    # Output channels of those convs (int >= 1). Log: 256; sephv14_22/23/31: 1024 (box
    # tower); sephv10: 384 (shared convs). Also the width of the IoU tower's convs.
    node.CONV_DIM = 256
    # Number of FC layers (int >= 0): both towers of TwinTowerConvFCHead, the cls tower of
    # FCClsConvBoxHead (>= 1). Not used by SharedConvHead. Log: 2 (sephv2 rows, "two 2xfc
    # head"); 0 in "seph" / "two 4xconv head".
    node.NUM_FC = 2
    # Output features of those FCs (int >= 1). Log: 1024. Also the IoU tower's FC width.
    node.FC_DIM = 1024
    # SharedConvHead only: channels of its cls and box branch convs (int >= 1). Log: 256.
    node.BRANCH_CONV_DIM = 256
    # FCClsConvBoxHead only, when MODEL.SEPH.IOU_BRANCH.ENABLED: the IoU tower on the pooled
    # input has IOU_NUM_CONV convs (width CONV_DIM) then IOU_NUM_FC FCs (width FC_DIM); at
    # least one layer. Log: 0/2 (sephv3, sephv4, sephv4_1, sephv6, sephv8, iou1, the
    # original's defaults), 4/0 (iou2, iou4..iou7, sephv27).
    node.IOU_NUM_CONV = 0
    node.IOU_NUM_FC = 2
    # Not reproduced: the original's CONV_WEIGHT_DECAY / FC_WEIGHT_DECAY (L2 1e-4 on the
    # towers' conv / FC weights only; "regularizer" rows sephv14_36..39/41/43*/44). sephnet
    # uses detectron2's global SOLVER.WEIGHT_DECAY (SEPH_SPEC Part A item 1). Dropout (off
    # in every log row) is not offered; DropBlock is, as a trick: MODEL.SEPH.DROPBLOCK.HEADS.


def _check_int(value, key: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r}; expected an int >= {minimum}.")


def _used_widths(cfg: CfgNode, name: str):
    """(key, width) of every normalised layer width the named head builds."""
    node = cfg.MODEL.SEPH.BOX_HEAD
    widths = []
    if name == "TwinTowerConvFCHead":
        widths += [("CONV_DIM", node.CONV_DIM)] if node.NUM_CONV else []
        widths += [("FC_DIM", node.FC_DIM)] if node.NUM_FC else []
    elif name == "FCClsConvBoxHead":
        widths += [("CONV_DIM", node.CONV_DIM), ("FC_DIM", node.FC_DIM)]
    elif name == "SharedConvHead":
        widths += [("CONV_DIM", node.CONV_DIM)] if node.NUM_CONV else []
        widths += [("BRANCH_CONV_DIM", node.BRANCH_CONV_DIM)]
    return widths


def validate_config(cfg: CfgNode) -> None:
    """Check the box-head keys.

    Validated: NAME is registered (the error lists the registered heads), and a NAME other
    than the upstream adapter comes with a Seph ROI head (MODEL.ROI_HEADS.NAME starting with
    "Seph"; detectron2's ROI heads would silently ignore it); counts are ints
    >= 0 and widths ints >= 1; the named head gets the layers it needs (TwinTowerConvFCHead:
    NUM_CONV + NUM_FC >= 1; FCClsConvBoxHead: NUM_CONV >= 1 and NUM_FC >= 1, and with the IoU
    branch on IOU_NUM_CONV + IOU_NUM_FC >= 1; SharedConvHead: POOLER_RESOLUTION >= 3);
    ``MODEL.ROI_BOX_HEAD.NORM`` is a known norm, and a sephnet-only norm (EvoNormS0) is
    used with a sephnet head inside a Seph ROI head (the upstream head cannot build it);
    the widths the head normalises are divisible by the norm's groups (GN: 32; sephnet's
    norms: MODEL.SEPH.EVONORM.GROUPS), and normalised FCs have at least 2 channels per group.

    Raises:
        ValueError: naming the offending keys and values.
    """
    # Registers every decoupled head; imported here so the config package stays importable
    # without the model package.
    from sephnet.modeling.roi_heads import box_heads  # noqa: F401

    node = cfg.MODEL.SEPH.BOX_HEAD
    name = node.NAME
    get_registered(SEPH_BOX_HEAD_REGISTRY, name, f"{_KEY}.NAME")
    roi_heads = cfg.MODEL.ROI_HEADS.NAME
    if name != _UPSTREAM and not roi_heads.startswith("Seph"):
        # detectron2's ROI heads build MODEL.ROI_BOX_HEAD.NAME and would ignore this head.
        raise ValueError(
            f"{_KEY}.NAME={name!r} is only built by sephnet's ROI heads; MODEL.ROI_HEADS.NAME="
            f"{roi_heads!r} is not one (expected a 'Seph...' name, e.g. 'SephStandardROIHeads')."
        )
    for key in ("NUM_CONV", "NUM_FC", "IOU_NUM_CONV", "IOU_NUM_FC"):
        _check_int(node[key], f"{_KEY}.{key}", 0)
    for key in ("CONV_DIM", "FC_DIM", "BRANCH_CONV_DIM"):
        _check_int(node[key], f"{_KEY}.{key}", 1)

    iou_on = cfg.MODEL.SEPH.IOU_BRANCH.ENABLED  # the predictor component's switch
    counts = f"{_KEY}.NUM_CONV={node.NUM_CONV}, {_KEY}.NUM_FC={node.NUM_FC}"
    if name == "TwinTowerConvFCHead" and node.NUM_CONV + node.NUM_FC < 1:
        raise ValueError(f"{name} needs at least one layer per tower; got {counts}.")
    if name == "FCClsConvBoxHead":
        if node.NUM_CONV < 1 or node.NUM_FC < 1:
            raise ValueError(
                f"{name} needs NUM_FC >= 1 (cls tower) and NUM_CONV >= 1 (box tower); "
                f"got {counts}."
            )
        if iou_on and node.IOU_NUM_CONV + node.IOU_NUM_FC < 1:
            raise ValueError(
                f"MODEL.SEPH.IOU_BRANCH.ENABLED=True gives {name} an IoU tower, but "
                f"{_KEY}.IOU_NUM_CONV={node.IOU_NUM_CONV} and {_KEY}.IOU_NUM_FC="
                f"{node.IOU_NUM_FC}; expected at least one layer."
            )
    resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    if name == "SharedConvHead" and resolution < 3:
        raise ValueError(
            f"{name}'s VALID box conv needs MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION >= 3; "
            f"got {resolution}."
        )

    norm = cfg.MODEL.ROI_BOX_HEAD.NORM
    try:
        resolve_norm(norm)
    except (TypeError, ValueError) as e:
        raise ValueError(f"MODEL.ROI_BOX_HEAD.NORM: {e}") from None
    if is_sephnet_norm(norm):
        if name == _UPSTREAM or not roi_heads.startswith("Seph"):
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.NORM={norm!r} is a sephnet norm; it needs a sephnet "
                f"box head ({_KEY}.NAME other than {_UPSTREAM!r}, got {name!r}) inside a "
                f"Seph ROI head (MODEL.ROI_HEADS.NAME, got {roi_heads!r}): detectron2's "
                "box heads cannot build it."
            )
        if not norm_uses_groups(norm):  # FRN: per channel, conv layers only
            fc_keys = [key for key, _ in _used_widths(cfg, name) if key == "FC_DIM"]
            if fc_keys:
                raise ValueError(
                    f"MODEL.ROI_BOX_HEAD.NORM={norm!r} normalises over each map's H x W, which "
                    f"an FC output lacks; {_KEY}.NAME={name!r} with {_KEY}.NUM_FC="
                    f"{node.NUM_FC} has FC layers (use a conv-only head or another norm)."
                )
            return
        groups, groups_key = cfg.MODEL.SEPH.EVONORM.GROUPS, "MODEL.SEPH.EVONORM.GROUPS"
    elif norm == "GN":
        groups, groups_key = 32, "GN's fixed group count"
    else:
        return
    if name == _UPSTREAM:
        return  # detectron2's head: its own widths and checks
    for key, width in _used_widths(cfg, name):
        if width % groups:
            raise ValueError(
                f"{_KEY}.{key}={width} is not divisible by {groups} ({groups_key}), which "
                f"MODEL.ROI_BOX_HEAD.NORM={norm!r} needs."
            )
        if key == "FC_DIM" and width // groups < 2:
            # An FC output has no spatial extent: with one channel per group the group
            # variance is 0 (EvoNormS0 then scales by 1/sqrt(eps), GN outputs its bias).
            raise ValueError(
                f"{_KEY}.FC_DIM={width} leaves one channel per group ({groups}, {groups_key}) "
                f"for MODEL.ROI_BOX_HEAD.NORM={norm!r}; FC outputs need at least 2 channels "
                f"per group (FC_DIM >= {2 * groups})."
            )
