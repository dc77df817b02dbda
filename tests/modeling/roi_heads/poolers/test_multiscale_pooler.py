"""Multi-scale pooler: context-box geometry by value (both versions), pooled values on a linear
ramp, both crops on the box's level, order over images, config checks."""
import math

import pytest
import torch

from sephnet.backend import Boxes, ShapeSpec, build_roi_heads
from sephnet.config import validate_sephnet_config
from sephnet.modeling.roi_heads.decoupled_features import ContextPair
from sephnet.modeling.roi_heads.poolers.multiscale_pooler import (
    CONTEXT_VERSIONS,
    MultiScaleROIPooler,
    scale_boxes,
)

OLD, NEW = CONTEXT_VERSIONS["2020-10-29"], CONTEXT_VERSIONS["2020-10-30"]


def test_the_two_versions_of_the_original():
    assert OLD == (1.5, 7)
    assert NEW[1] == 13 and math.isclose(NEW[0], 13 / 7)


@pytest.mark.parametrize(
    "factor,expected",
    [
        # box (10, 20, 30, 60): centre (20, 40), w 20, h 40
        (1.5, [5.0, 10.0, 35.0, 70.0]),  # half sizes 15, 30
        (13 / 7, [20 - 130 / 7, 40 - 260 / 7, 20 + 130 / 7, 40 + 260 / 7]),  # 10*13/7, 20*13/7
    ],
)
def test_context_box_is_the_box_scaled_about_its_centre_without_clipping(factor, expected):
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [-4.0, 0.0, 4.0, 2.0]])
    out = scale_boxes(boxes, factor)
    torch.testing.assert_close(out[0], torch.tensor(expected))
    # second box: centre (0, 1), w 8, h 2 -> extends past the image origin (no clipping)
    torch.testing.assert_close(
        out[1], torch.tensor([-4 * factor, 1 - factor, 4 * factor, 1 + factor])
    )


def _ramp_features(size=64):
    """One level, stride 1: channel 0 = x (column index), channel 1 = y (row index)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return [torch.stack([xs, ys]).float()[None]]


def _expected_ramp(box, n):
    """ROIAlignV2 on a linear ramp: each bin's value is its centre, minus the half-pixel shift."""
    x1, y1, x2, y2 = box
    cx = x1 - 0.5 + (torch.arange(n) + 0.5) * (x2 - x1) / n
    cy = y1 - 0.5 + (torch.arange(n) + 0.5) * (y2 - y1) / n
    return cx[None, :].expand(n, n), cy[:, None].expand(n, n)


@pytest.mark.parametrize("version", [OLD, NEW])
def test_pooled_values_on_a_linear_ramp(version):
    scale, m = version
    pooler = MultiScaleROIPooler(
        output_size=7, scales=(1.0,), sampling_ratio=2, pooler_type="ROIAlignV2",
        context_scale=scale, context_resolution=m,
    )
    box = [20.0, 24.0, 36.0, 40.0]  # context stays inside the 64x64 map for both versions
    out = pooler(_ramp_features(), [Boxes(torch.tensor([box]))])
    assert isinstance(out, ContextPair)
    assert out.box.shape == (1, 2, 7, 7) and out.context.shape == (1, 2, m, m)
    ex, ey = _expected_ramp(box, 7)
    torch.testing.assert_close(out.box[0, 0], ex, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.box[0, 1], ey, rtol=0, atol=1e-4)
    half = 8 * scale  # the box is 16 x 16 around (28, 32)
    cx, cy = _expected_ramp([28 - half, 32 - half, 28 + half, 32 + half], m)
    torch.testing.assert_close(out.context[0, 0], cx, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.context[0, 1], cy, rtol=0, atol=1e-4)


def test_both_crops_come_from_the_level_assigned_to_the_box():
    # levels p2..p5 (strides 4..32), each filled with its level number
    strides = (4, 8, 16, 32)
    feats = [torch.full((1, 1, 1024 // s, 1024 // s), float(k)) for k, s in enumerate(strides, 2)]
    pooler = MultiScaleROIPooler(
        output_size=7, scales=tuple(1 / s for s in strides), sampling_ratio=0,
        pooler_type="ROIAlignV2", context_scale=13 / 7, context_resolution=13,
    )
    g = torch.Generator().manual_seed(0)
    sizes = torch.exp(torch.rand(200, generator=g) * math.log(900 / 8)) * 8  # 8..900 px
    aspect = torch.rand(200, generator=g) + 0.5
    w, h = sizes * aspect.sqrt(), sizes / aspect.sqrt()
    boxes = torch.stack([512 - w / 2, 512 - h / 2, 512 + w / 2, 512 + h / 2], dim=1)
    out = pooler(feats, [Boxes(boxes)])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    expected = torch.clamp(torch.floor(4 + torch.log2(area.sqrt() / 224 + 1e-8)), 2, 5)
    torch.testing.assert_close(out.box[:, 0, 3, 3], expected)
    torch.testing.assert_close(out.context[:, 0, 6, 6], expected)
    assert len(set(expected.tolist())) == 4  # every level used


def test_rois_of_all_images_in_order_and_empty_images():
    feats = [torch.arange(2.0).reshape(2, 1, 1, 1).expand(2, 1, 32, 32).contiguous()]
    pooler = MultiScaleROIPooler(
        output_size=3, scales=(1.0,), sampling_ratio=0, pooler_type="ROIAlignV2",
        context_scale=1.5, context_resolution=5,
    )
    b = torch.tensor([[8.0, 8.0, 16.0, 16.0]])
    out = pooler(feats, [Boxes(b), Boxes(torch.zeros(0, 4))])
    assert out.box.shape == (1, 1, 3, 3) and out.context.shape == (1, 1, 5, 5)
    feats3 = [torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 1, 32, 32).contiguous()]
    out = pooler(feats3, [Boxes(b), Boxes(torch.zeros(0, 4)), Boxes(b.repeat(2, 1))])
    assert out.box[:, 0, 1, 1].tolist() == [0.0, 2.0, 2.0]
    assert out.context[:, 0, 2, 2].tolist() == [0.0, 2.0, 2.0]


@pytest.mark.parametrize("kwargs", [dict(context_scale=1.0), dict(context_resolution=0),
                                    dict(context_resolution=7.0)])
def test_bad_arguments(kwargs):
    args = dict(output_size=7, scales=(1.0,), sampling_ratio=0, pooler_type="ROIAlignV2",
                context_scale=1.5, context_resolution=7)
    args.update(kwargs)
    with pytest.raises(ValueError, match="context_"):
        MultiScaleROIPooler(**args)


TINY_KEYS = {
    "MODEL.ROI_HEADS.NAME": "SephStandardROIHeads",
    "MODEL.SEPH.BOX_HEAD.NAME": "BoxQueryAttentionHead",
    "MODEL.SEPH.MULTISCALE_POOLER.ENABLED": True,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
}


def _cfg(sephnet_cfg, **keys):
    """The shared config with this file's keys, then ``keys`` (dotted keys)."""
    return sephnet_cfg({**TINY_KEYS, **keys})


@pytest.mark.parametrize("keys,head,hook", [
    ({}, "BoxQueryAttentionHead", None),
    ({"MODEL.SEPH.BOX_HEAD.NAME": "FCClsConvBoxHead"}, "FCClsConvBoxHead", None),  # sephv19
    ({"MODEL.SEPH.BOX_HEAD.NAME": "FCClsConvBoxHead",
      "MODEL.SEPH.ROI_HOOK.NAME": "IouHeadNonLocalROIHeadsHook"}, "FCClsConvBoxHead", "ROIHook"),
])
def test_valid_combinations_pass(keys, head, hook, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **keys, **{"MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_SCALE": 2.0})
    validate_sephnet_config(cfg)
    # what the validated config builds: the multi-scale pooler feeding the named head (and hook)
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    heads = build_roi_heads(cfg, {f"p{k}": ShapeSpec(channels=32, stride=2 ** k) for k in range(2, 6)})
    assert isinstance(heads.box_pooler, MultiScaleROIPooler) and heads.box_pooler.context_scale == 2.0
    feats = [torch.zeros(1, 32, 64 >> k, 64 >> k) for k in range(2, 6)]
    pooled = heads.box_pooler(feats, [Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]))])
    assert pooled.box.shape == pooled.context.shape == (1, 32, 7, 7)
    parts = {type(m).__name__ for m in heads.box_head.modules()}
    assert head in parts and (hook is None or hook in parts)


@pytest.mark.parametrize(
    "keys,match",
    [
        ({"MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_SCALE": 0.5}, "CONTEXT_SCALE=0.5"),
        ({"MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION": 0}, "CONTEXT_RESOLUTION=0"),
        ({"MODEL.SEPH.BOX_HEAD.NAME": "FCClsConvBoxHead",
          "MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION": 13}, "CONTEXT_RESOLUTION=13"),
        ({"MODEL.SEPH.BOX_HEAD.NAME": "UpstreamBoxHead"}, "UpstreamBoxHead"),
        ({"MODEL.SEPH.MULTISCALE_POOLER.ENABLED": False}, "ENABLED=True"),
        ({"MODEL.SEPH.ROI_HOOK.NAME": "IouHeadNonLocalROIHeadsHook"}, "ROI_HOOK.NAME"),
        ({"MODEL.ROI_HEADS.NAME": "SephGEROIHeads"}, "SephGEROIHeads"),
    ],
)
def test_config_errors_name_the_key(keys, match, sephnet_cfg):
    with pytest.raises(ValueError, match=match):
        validate_sephnet_config(_cfg(sephnet_cfg, **keys))


def test_sephv19_head_reads_the_pair_positionally():
    """FCClsConvBoxHead on a ContextPair: cls tower on the box crop, box tower on the context."""
    from sephnet.backend import ShapeSpec
    from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import FCClsConvBoxHead

    torch.manual_seed(0)
    head = FCClsConvBoxHead(input_shape=ShapeSpec(channels=4, height=7, width=7), num_fc=1,
                            fc_dim=8, num_conv=1, conv_dim=4, iou_tower=True, iou_num_conv=1,
                            iou_num_fc=0)
    box, ctx = torch.randn(3, 4, 7, 7), torch.randn(3, 4, 7, 7)
    out = head(ContextPair(box, ctx))
    torch.testing.assert_close(out.cls, head.cls_tower(box))
    torch.testing.assert_close(out.box, head.box_tower(ctx))
    torch.testing.assert_close(out.iou, head.iou_tower(ctx))
