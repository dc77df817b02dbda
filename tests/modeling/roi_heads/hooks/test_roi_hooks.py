"""ROI-head hooks: identity at init with the gamma residual, declared shapes for every hook
and version, values of the SE/CBAM/IoU/cls-V4 forms, registry-wide build + backward, config
checks."""
import math

import pytest
import torch

from sephnet.backend import ShapeSpec
from sephnet.config import validate_sephnet_config
from sephnet.layers.cbam import CBAM
from sephnet.layers.non_local import PositionalNonLocalBlock
from sephnet.modeling.registry import SEPH_ROI_HOOK_REGISTRY
from sephnet.modeling.roi_heads.hooks import roi_hooks
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import FCClsConvBoxHead
from sephnet.modeling.roi_heads.decoupled_features import ContextPair, DecoupledFeatures
from sephnet.modeling.roi_heads.hooks.roi_hooks import (
    ROI_HOOK_PRESETS,
    HookedBoxHead,
    build_roi_hook,
)

C, S = 16, 7
SHAPE = ShapeSpec(channels=C, height=S, width=S)
HOOK_NAMES = sorted(name for name, _ in SEPH_ROI_HOOK_REGISTRY)
CASES = [(name, v) for name in HOOK_NAMES for v in ROI_HOOK_PRESETS[name].versions]
# Every non-local form with a residual (ClsNonLocal version 4 multiplies by 2 * SE gate
# after the block, so it is not an identity at init by design).
NON_LOCAL = [
    (n, v) for n, v in CASES if "NonLocal" in n and (n, v) != ("ClsNonLocalROIHeadsHook", 4)
]


def tiny_cfg(sephnet_cfg, hook="", version=1, head="FCClsConvBoxHead", **keys):
    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = S
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    node = cfg.MODEL.SEPH.BOX_HEAD
    node.NAME, node.NUM_CONV, node.CONV_DIM, node.NUM_FC, node.FC_DIM = head, 1, 16, 1, 16
    cfg.MODEL.SEPH.ROI_HOOK.NAME = hook
    cfg.MODEL.SEPH.ROI_HOOK.VERSION = version
    cfg.MODEL.SEPH.ROI_HOOK.SE_RATIO = 4
    for key, value in keys.items():
        cfg.merge_from_list([key, value])
    return cfg


def fields(out):
    return [out] if isinstance(out, torch.Tensor) else [t for t in out if t is not None]


def test_every_hook_family_of_the_spec_is_registered():
    assert set(HOOK_NAMES) == set(ROI_HOOK_PRESETS) == {
        "NonLocalROIHeadsHook", "OneHeadNonLocalROIHeadsHook", "ClsNonLocalROIHeadsHook",
        "BoxNonLocalROIHeadsHook", "IouHeadNonLocalROIHeadsHook", "SEROIHeadsHook",
        "ClsSEROIHeadsHook", "OneHeadSEROIHeadsHook", "OneHeadCBAMROIHeadsHook",
    }


@pytest.mark.parametrize("name,version", NON_LOCAL)
def test_gamma_residual_hook_is_identity_at_init(name, version):
    torch.manual_seed(0)
    hook = SEPH_ROI_HOOK_REGISTRY.get(name)(
        input_shape=SHAPE, version=version, weighted_residual=True, norm=""
    )
    with torch.no_grad():  # v4's embedding is added to x, residual included
        for block in hook.modules():
            if isinstance(block, PositionalNonLocalBlock):
                block.pos_embedding.zero_()
    x = torch.randn(4, C, S, S)
    out = hook(x)
    for t in fields(out):
        torch.testing.assert_close(t, x, rtol=0, atol=0)
    # and not an identity once gamma moves (the block is really there)
    with torch.no_grad():
        for p in hook.parameters():
            if p.dim() == 0:
                p.fill_(1.0)
    assert any((t - x).abs().max() > 1e-4 for t in fields(hook(x)))


@pytest.mark.parametrize("name,version", CASES)
def test_every_hook_keeps_the_pooled_shape_and_declared_kind(name, version, sephnet_cfg):
    hook = build_roi_hook(tiny_cfg(sephnet_cfg, name, version), SHAPE)
    x = torch.randn(3, C, S, S)
    out = hook(x)
    if hook.output_kind == "tensor":
        assert isinstance(out, torch.Tensor) and out.shape == x.shape
    else:
        assert hook.output_kind == "decoupled" and isinstance(out, DecoupledFeatures)
        assert out.cls.shape == out.box.shape == x.shape
        assert out.iou is None or out.iou.shape == x.shape
    empty = hook(torch.zeros(0, C, S, S))
    assert all(t.shape == (0, C, S, S) for t in fields(empty))


@pytest.mark.parametrize(
    "name,version,q_width,v_width,heads,positional",
    [
        ("NonLocalROIHeadsHook", 1, C // 8, C // 2, 1, False),
        ("OneHeadNonLocalROIHeadsHook", 1, C // 8, C // 2, 1, False),
        ("OneHeadNonLocalROIHeadsHook", 2, C, C, 4, True),
        ("OneHeadNonLocalROIHeadsHook", 3, C, C, 1, False),
        ("ClsNonLocalROIHeadsHook", 1, C // 8, C // 2, 1, False),
        ("ClsNonLocalROIHeadsHook", 2, C, C, 4, True),
        ("ClsNonLocalROIHeadsHook", 3, C // 2, C // 2, 2, True),
        ("ClsNonLocalROIHeadsHook", 4, C, C, 4, True),
        ("BoxNonLocalROIHeadsHook", 1, C // 8, C // 2, 1, False),
        ("BoxNonLocalROIHeadsHook", 2, C, C, 4, True),
        ("IouHeadNonLocalROIHeadsHook", 1, C // 8, C // 2, 1, False),
    ],
)
def test_non_local_forms_follow_the_spec_table(
    name, version, q_width, v_width, heads, positional, sephnet_cfg
):
    hook = build_roi_hook(tiny_cfg(sephnet_cfg, name, version), SHAPE)
    blocks = [m for m in hook.modules() if hasattr(m, "num_heads") and hasattr(m, "value")]
    assert blocks
    for b in blocks:
        assert b.query.out_channels == b.key.out_channels == q_width
        assert b.value.out_channels == v_width and b.num_heads == heads
        assert isinstance(b, PositionalNonLocalBlock) == positional
        if positional:
            assert b.pos_embedding.shape == (1, C, S, S)
    assert len(blocks) == (2 if name == "NonLocalROIHeadsHook" else 1)


def test_cls_and_box_hooks_leave_the_other_tower_raw(sephnet_cfg):
    x = torch.randn(2, C, S, S)
    cls_out = build_roi_hook(tiny_cfg(sephnet_cfg, "ClsNonLocalROIHeadsHook"), SHAPE)(x)
    assert cls_out.box is x and (cls_out.cls - x).abs().max() > 0
    box_out = build_roi_hook(tiny_cfg(sephnet_cfg, "BoxNonLocalROIHeadsHook"), SHAPE)(x)
    assert box_out.cls is x and (box_out.box - x).abs().max() > 0
    iou_out = build_roi_hook(tiny_cfg(sephnet_cfg, "IouHeadNonLocalROIHeadsHook"), SHAPE)(x)
    assert iou_out.cls is x and iou_out.box is x and (iou_out.iou - x).abs().max() > 0
    se_out = build_roi_hook(tiny_cfg(sephnet_cfg, "ClsSEROIHeadsHook"), SHAPE)(x)
    assert se_out.box is x


def test_cls_version_4_is_version_2_times_twice_the_se_gate(sephnet_cfg):
    torch.manual_seed(1)
    hook = build_roi_hook(tiny_cfg(sephnet_cfg, "ClsNonLocalROIHeadsHook", 4), SHAPE)
    x = torch.randn(3, C, S, S)
    y = hook.block(x)
    se = hook.se
    pooled = y.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ se.squeeze.weight.T + se.squeeze.bias)
    gate = torch.sigmoid(hidden @ se.excite.weight.T + se.excite.bias)
    torch.testing.assert_close(hook(x).cls, 2 * y * gate[:, :, None, None])


def test_se_and_cbam_hooks_apply_their_blocks(sephnet_cfg):
    torch.manual_seed(2)
    x = torch.randn(3, C, S, S)
    two = build_roi_hook(tiny_cfg(sephnet_cfg, "SEROIHeadsHook"), SHAPE)
    out = two(x)
    torch.testing.assert_close(out.cls, two.cls_se(x))
    torch.testing.assert_close(out.box, two.box_se(x))
    assert (out.cls - out.box).abs().max() > 0  # independent weights
    one = build_roi_hook(tiny_cfg(sephnet_cfg, "OneHeadSEROIHeadsHook"), SHAPE)
    assert one.se.squeeze.out_features == C // 4  # SE_RATIO
    torch.testing.assert_close(one(x), one.se(x))
    cbam = build_roi_hook(tiny_cfg(sephnet_cfg, "OneHeadCBAMROIHeadsHook"), SHAPE)
    assert isinstance(cbam.cbam, CBAM)
    torch.testing.assert_close(cbam(x), cbam.cbam(x))


@torch.no_grad()
def _cross_attention_reference(att, box, ctx):
    """Slow reference: every query position attends over every context position."""
    r_count, _, s, _ = box.shape
    m = ctx.shape[-1]
    expected = torch.zeros_like(box)
    wq, wk, wv, wo = (conv.weight[:, :, 0, 0] for conv in (att.query, att.key, att.value, att.out))
    for r in range(r_count):
        for i in range(s):
            for j in range(s):
                q = wq @ box[r, :, i, j] + att.query.bias
                logits, values = [], []
                for a in range(m):
                    for b in range(m):
                        k = wk @ ctx[r, :, a, b] + att.key.bias
                        logits.append(float(q @ k) / math.sqrt(att.value.out_channels))  # 1 head
                        values.append(wv @ ctx[r, :, a, b] + att.value.bias)
                w = torch.softmax(torch.tensor(logits), dim=0)
                o = sum(wi * vi for wi, vi in zip(w, values))
                expected[r, :, i, j] = wo @ o + att.out.bias
    return expected


def test_iou_hook_on_a_context_pair_is_unresidualled_cross_attention():
    torch.manual_seed(3)
    hook = roi_hooks.IouHeadNonLocalROIHeadsHook(input_shape=SHAPE, with_context=True, norm="")
    box, ctx = torch.randn(2, C, S, S), torch.randn(2, C, 13, 13)
    out = hook(ContextPair(box, ctx))
    assert out.cls is box and out.box is box and out.iou.shape == box.shape
    expected = _cross_attention_reference(hook.attention, box, ctx)
    torch.testing.assert_close(out.iou, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="ContextPair"):
        hook(box)


@pytest.mark.parametrize("name", [n for n in HOOK_NAMES if n != "IouHeadNonLocalROIHeadsHook"])
def test_single_map_hooks_reject_the_context_pair(name, sephnet_cfg):
    hook = build_roi_hook(tiny_cfg(sephnet_cfg, name), SHAPE)
    with pytest.raises(TypeError, match="ContextPair"):
        hook(ContextPair(torch.zeros(1, C, S, S), torch.zeros(1, C, S, S)))


@pytest.mark.parametrize("name,version", CASES)
def test_every_hook_builds_from_config_and_backpropagates_through_the_box_head(
    name, version, sephnet_cfg
):
    cfg = tiny_cfg(sephnet_cfg, name, version, **{"MODEL.SEPH.IOU_BRANCH.ENABLED": True})
    validate_sephnet_config(cfg)
    head = HookedBoxHead(build_roi_hook(cfg, SHAPE), FCClsConvBoxHead(cfg, SHAPE))
    assert head.output_shapes == head.head.output_shapes
    x = torch.randn(4, C, S, S, requires_grad=True)
    out = head(x)
    assert out.cls.shape == (4, 16) and out.box.shape == (4, 16, S, S) and out.iou is not None
    sum((t ** 2).sum() for t in fields(out)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in head.hook.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_no_hook_by_default(sephnet_cfg):
    assert build_roi_hook(tiny_cfg(sephnet_cfg), SHAPE) is None


@pytest.mark.parametrize(
    "keys,match",
    [
        ({"MODEL.SEPH.ROI_HOOK.NAME": "NoSuchHook"}, "MODEL.SEPH.ROI_HOOK.NAME='NoSuchHook'"),
        ({"MODEL.SEPH.ROI_HOOK.NAME": "BoxNonLocalROIHeadsHook", "MODEL.SEPH.ROI_HOOK.VERSION": 3},
         "MODEL.SEPH.ROI_HOOK.VERSION=3"),
        ({"MODEL.SEPH.ROI_HOOK.NAME": "SEROIHeadsHook",
          "MODEL.SEPH.BOX_HEAD.NAME": "SharedConvHead"},
         "SharedConvHead"),
        ({"MODEL.SEPH.ROI_HOOK.NAME": "OneHeadSEROIHeadsHook",
          "MODEL.ROI_HEADS.NAME": "SephCascadeROIHeads",
          "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True},
         "MODEL.ROI_HEADS.NAME='SephCascadeROIHeads'"),
        ({"MODEL.SEPH.ROI_HOOK.NAME": "OneHeadSEROIHeadsHook",
          "MODEL.SEPH.MULTISCALE_POOLER.ENABLED": True}, "MULTISCALE_POOLER"),
        ({"MODEL.SEPH.ROI_HOOK.SE_RATIO": 0}, "MODEL.SEPH.ROI_HOOK.SE_RATIO=0"),
        ({"MODEL.SEPH.ROI_HOOK.NORM": "NoNorm"}, "MODEL.SEPH.ROI_HOOK.NORM"),
    ],
)
def test_config_errors_name_the_key(keys, match, sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg)
    for key, value in keys.items():
        cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(".", r"\.")):
        validate_sephnet_config(cfg)


def test_bad_version_at_construction():
    with pytest.raises(ValueError, match="version=5"):
        roi_hooks.ClsNonLocalROIHeadsHook(input_shape=SHAPE, version=5)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_registered_hook_declares_its_capabilities(name, sephnet_cfg):
    """Config validation reads these instead of lists of hook names; they match the hook built."""
    entry = SEPH_ROI_HOOK_REGISTRY.get(name)
    assert entry.output_kind in ("tensor", "decoupled") and entry.versions
    assert entry.reads_context_pair == (name == "IouHeadNonLocalROIHeadsHook")
    assert build_roi_hook(tiny_cfg(sephnet_cfg, name), SHAPE).output_kind == entry.output_kind
