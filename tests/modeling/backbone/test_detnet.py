"""DetNet-59: stage strides, dilations, projection shortcuts and block counts; its FPN."""
import pytest
import torch

from sephnet.backend import ShapeSpec
from sephnet.config import validate_sephnet_config
from sephnet.modeling.backbone.detnet import (
    DetNet,
    DetNetBlock,
    build_seph_detnet_backbone,
    build_seph_detnet_fpn_backbone,
)

STAGES = ["res2", "res3", "res4", "res5", "res6"]


def test_stage_strides_dilations_and_widths():
    model = DetNet(out_features=STAGES, norm="FrozenBN").eval()
    shapes = model.output_shape()
    assert [shapes[s].stride for s in STAGES] == [4, 8, 16, 16, 16]
    assert [shapes[s].channels for s in STAGES] == [256, 512, 1024, 1024, 1024]
    # 59 = 1 stem conv + 3 convs x (3 + 4 + 6 + 3 + 3) blocks + 1 classifier (not built here).
    assert [len(getattr(model, s)) for s in STAGES] == [3, 4, 6, 3, 3]
    for stage in ("res5", "res6"):
        blocks = list(getattr(model, stage))
        assert all(isinstance(b, DetNetBlock) and b.stride == 1 for b in blocks)
        assert [b.conv2.dilation for b in blocks] == [(2, 2)] * 3
        assert [b.conv2.padding for b in blocks] == [(2, 2)] * 3
        assert blocks[0].conv2.in_channels == 256  # the paper's 256-wide bottleneck
        # block B (1x1 projection) opens each stage although channels do not change; then A.
        assert blocks[0].shortcut is not None and blocks[0].shortcut.kernel_size == (1, 1)
        assert blocks[1].shortcut is None and blocks[2].shortcut is None
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "res2": (16, 24), "res3": (8, 12), "res4": (4, 6), "res5": (4, 6), "res6": (4, 6)
    }


def test_identity_block_without_projection_needs_equal_channels():
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        DetNetBlock(512, 1024, bottleneck_channels=256, projection=False)


def _cfg(sephnet_cfg, **opts):
    cfg = sephnet_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.FPN.IN_FEATURES = STAGES
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    validate_sephnet_config(cfg)
    return cfg


def test_builders_read_the_config(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{"MODEL.BACKBONE.NAME": "build_seph_detnet_fpn_backbone", "MODEL.SEPH.DETNET.OUT_CHANNELS": 512})
    fpn = build_seph_detnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    shapes = fpn.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 16, 16]
    assert fpn.bottom_up.res6[2].conv3.out_channels == 512
    with torch.no_grad():
        out = fpn(torch.zeros(1, 3, 64, 64))
    assert [tuple(v.shape) for v in out.values()] == [(1, 32, 16, 16), (1, 32, 8, 8)] + [(1, 32, 4, 4)] * 3
    cfg = _cfg(sephnet_cfg, **{"MODEL.BACKBONE.NAME": "build_seph_detnet_backbone", "MODEL.RESNETS.OUT_FEATURES": ["res6"]})
    assert build_seph_detnet_backbone(cfg, ShapeSpec(channels=3)).output_shape()["res6"].stride == 16


def test_config_errors_name_the_keys(sephnet_cfg):
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH=50"):
        _cfg(sephnet_cfg, **{"MODEL.BACKBONE.NAME": "build_seph_detnet_backbone", "MODEL.RESNETS.DEPTH": 101})
    with pytest.raises(ValueError, match="read only by"):
        _cfg(sephnet_cfg, **{"MODEL.SEPH.DETNET.BOTTLENECK_CHANNELS": 128})
    with pytest.raises(ValueError, match="DetNet stages"):
        _cfg(sephnet_cfg, **{"MODEL.BACKBONE.NAME": "build_seph_detnet_fpn_backbone", "MODEL.FPN.IN_FEATURES": ["res7"]})
