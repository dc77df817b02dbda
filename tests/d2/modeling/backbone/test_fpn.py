from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.backbone import BACKBONE_REGISTRY, Backbone, build_backbone
from sephnet.d2.modeling.backbone.fpn import (
    FPN,
    LastLevelMaxPool,
    LastLevelP6P7,
    _assert_strides_are_log2_contiguous,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)

NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def _base_rcnn_fpn_r50_cfg():
    """The keys Base-RCNN-FPN.yaml + faster_rcnn_R_50_FPN_1x.yaml set for the backbone."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


def _expected_r50_fpn_keys():
    keys = []
    for stage in (2, 3, 4, 5):
        for kind in ("lateral", "output"):
            keys += [f"fpn_{kind}{stage}.weight", f"fpn_{kind}{stage}.bias"]
    keys += ["bottom_up.stem.conv1.weight"] + [f"bottom_up.stem.conv1.norm.{k}" for k in NORM_KEYS]
    for stage, num_blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for i in range(num_blocks):
            convs = (["shortcut"] if i == 0 else []) + ["conv1", "conv2", "conv3"]
            for conv in convs:
                prefix = f"bottom_up.res{stage}.{i}.{conv}"
                keys += [f"{prefix}.weight"] + [f"{prefix}.norm.{k}" for k in NORM_KEYS]
    return keys


def test_r50_fpn_state_dict_keys_match_detectron2_layout():
    model = build_backbone(_base_rcnn_fpn_r50_cfg())
    sd = model.state_dict()
    expected = _expected_r50_fpn_keys()
    assert len(expected) == 16 + 5 + 16 * 15 + 4 * 5  # 281
    assert list(sd.keys()) == expected
    assert sd["fpn_lateral2.weight"].shape == (256, 256, 1, 1)
    assert sd["fpn_lateral5.weight"].shape == (256, 2048, 1, 1)
    assert sd["fpn_output3.weight"].shape == (256, 256, 3, 3)
    assert sd["bottom_up.stem.conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["bottom_up.res2.0.shortcut.weight"].shape == (256, 64, 1, 1)
    assert sd["bottom_up.res3.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["bottom_up.res5.2.conv3.norm.running_var"].shape == (2048,)
    assert not any("lateral_convs" in k or "output_convs" in k or "cell_anchors" in k for k in sd)
    # FREEZE_AT=2 (the default): the stem and res2 do not train.
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        n
        for n in dict(model.named_parameters())
        if n.startswith(("bottom_up.stem.", "bottom_up.res2."))
    }


def test_r50_fpn_output_shapes_at_64x96():
    cfg = _base_rcnn_fpn_r50_cfg()
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    model = build_backbone(cfg).eval()
    assert model.size_divisibility == 32
    shapes = model.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert all(s.channels == 32 for s in shapes.values())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 32, 16, 24),
        "p3": (1, 32, 8, 12),
        "p4": (1, 32, 4, 6),
        "p5": (1, 32, 2, 3),
        "p6": (1, 32, 1, 2),
    }


class _FixedBackbone(Backbone):
    """Returns preset features; strides 4/8/16 (res2..res4), 2 channels."""

    def __init__(self, feats: Dict[str, torch.Tensor]):
        super().__init__()
        self.feats = feats
        self._out_features = list(feats)
        self._out_feature_channels = {k: v.shape[1] for k, v in feats.items()}
        self._out_feature_strides = {"res2": 4, "res3": 8, "res4": 16}

    def forward(self, x):
        return dict(self.feats)


def _identity_fpn(feats, fuse_type="sum", top_block=None):
    fpn = FPN(
        _FixedBackbone(feats), ["res2", "res3", "res4"], 2, top_block=top_block, fuse_type=fuse_type
    )
    with torch.no_grad():
        for stage in (2, 3, 4):
            lateral, output = getattr(fpn, f"fpn_lateral{stage}"), getattr(
                fpn, f"fpn_output{stage}"
            )
            lateral.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            output.weight.zero_()
            output.weight[:, :, 1, 1] = torch.eye(2)
            lateral.bias.zero_()
            output.bias.zero_()
    return fpn


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
def test_top_down_pathway_with_identity_convs(fuse_type):
    feats = {
        "res2": torch.randn(1, 2, 8, 8),
        "res3": torch.randn(1, 2, 4, 4),
        "res4": torch.randn(1, 2, 2, 2),
    }
    out = _identity_fpn(feats, fuse_type)(torch.zeros(1, 3, 32, 32))
    div = 2.0 if fuse_type == "avg" else 1.0
    up = lambda t: t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest 2x
    p4 = feats["res4"]
    p3 = (feats["res3"] + up(p4)) / div
    p2 = (feats["res2"] + up(p3)) / div
    assert list(out) == ["p2", "p3", "p4"]
    assert torch.allclose(out["p4"], p4, atol=1e-6)
    assert torch.allclose(out["p3"], p3, atol=1e-6)
    assert torch.allclose(out["p2"], p2, atol=1e-6)


def test_top_block_reads_fpn_output_or_bottom_up_feature():
    feats = {
        "res2": torch.randn(1, 2, 8, 8),
        "res3": torch.randn(1, 2, 4, 4),
        "res4": torch.randn(1, 2, 2, 2),
    }

    class _Pick(nn.Module):
        def __init__(self, in_feature):
            super().__init__()
            self.num_levels, self.in_feature = 1, in_feature

        def forward(self, x):
            return [F.max_pool2d(x, kernel_size=1, stride=2)]

    out = _identity_fpn(feats, top_block=_Pick("p4"))(None)
    assert list(out) == ["p2", "p3", "p4", "p5"]
    assert torch.allclose(out["p5"], out["p4"][:, :, ::2, ::2])
    out = _identity_fpn(feats, top_block=_Pick("res3"))(None)
    assert torch.allclose(out["p5"], feats["res3"][:, :, ::2, ::2])


def test_fpn_attribute_order_and_norm():
    feats = {
        "res2": torch.zeros(1, 4, 8, 8),
        "res3": torch.zeros(1, 4, 4, 4),
        "res4": torch.zeros(1, 4, 2, 2),
    }
    fpn = FPN(_FixedBackbone(feats), ["res2", "res3", "res4"], 32, norm="GN")
    assert fpn.lateral_convs == [fpn.fpn_lateral4, fpn.fpn_lateral3, fpn.fpn_lateral2]
    assert fpn.output_convs == [fpn.fpn_output4, fpn.fpn_output3, fpn.fpn_output2]
    assert fpn.in_features == ("res2", "res3", "res4")
    keys = set(fpn.state_dict())
    assert "fpn_lateral2.bias" not in keys and "fpn_lateral2.norm.weight" in keys
    assert isinstance(fpn.fpn_output3.norm, nn.GroupNorm)
    assert fpn.size_divisibility == 16


def test_invalid_fpn_arguments():
    feats = {
        "res2": torch.zeros(1, 4, 8, 8),
        "res3": torch.zeros(1, 4, 4, 4),
        "res4": torch.zeros(1, 4, 2, 2),
    }
    with pytest.raises(ValueError):
        FPN(_FixedBackbone(feats), ["res2", "res4"], 8)  # strides 4, 16
    with pytest.raises(ValueError):
        FPN(_FixedBackbone(feats), ["res2", "res3"], 8, fuse_type="max")
    with pytest.raises(TypeError):
        FPN(nn.Identity(), ["res2"], 8)
    with pytest.raises(ValueError):
        _assert_strides_are_log2_contiguous([8, 16, 64])
    _assert_strides_are_log2_contiguous([4, 8, 16, 32])


def test_last_level_blocks():
    maxpool = LastLevelMaxPool()
    assert (maxpool.num_levels, maxpool.in_feature) == (1, "p5")
    x = torch.randn(1, 2, 5, 7)
    (p6,) = maxpool(x)
    assert torch.equal(p6, x[:, :, ::2, ::2])

    p6p7 = LastLevelP6P7(16, 8)
    assert (p6p7.num_levels, p6p7.in_feature) == (2, "res5")
    assert torch.count_nonzero(p6p7.p6.bias) == 0  # c2_xavier_fill zeroes biases
    p6, p7 = p6p7(torch.randn(1, 16, 8, 12))
    assert p6.shape == (1, 8, 4, 6) and p7.shape == (1, 8, 2, 3)
    assert LastLevelP6P7(8, 8, in_feature="p5").in_feature == "p5"


def test_retinanet_fpn_builder():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    model = build_backbone(cfg)
    assert [(k, s.stride) for k, s in model.output_shape().items()] == [
        ("p3", 8),
        ("p4", 16),
        ("p5", 32),
        ("p6", 64),
        ("p7", 128),
    ]
    assert model.state_dict()["top_block.p6.weight"].shape == (16, 512, 3, 3)
    out = model(torch.zeros(1, 3, 128, 128))
    assert out["p7"].shape == (1, 16, 1, 1)
    assert (
        BACKBONE_REGISTRY.get("build_retinanet_resnet_fpn_backbone")
        is build_retinanet_resnet_fpn_backbone
    )
    assert BACKBONE_REGISTRY.get("build_resnet_fpn_backbone") is build_resnet_fpn_backbone
