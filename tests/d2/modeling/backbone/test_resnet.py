import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import (
    CNNBlockBase,
    DeformConv,
    FrozenBatchNorm2d,
    ModulatedDeformConv,
    ShapeSpec,
)
from sephnet.d2.modeling.backbone import (
    BACKBONE_REGISTRY,
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    build_backbone,
    build_resnet_backbone,
    make_stage,
)


def _cfg(depth: int, **resnets):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


@pytest.mark.parametrize(
    "depth, channels", [(18, [64, 128, 256, 512]), (50, [256, 512, 1024, 2048])]
)
def test_output_shapes_and_strides_at_64x96(depth, channels):
    model = build_resnet_backbone(_cfg(depth), ShapeSpec(channels=3))
    model.eval()
    shapes = model.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == channels
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    for (name, feat), c, stride in zip(out.items(), channels, [4, 8, 16, 32]):
        assert feat.shape == (2, c, 64 // stride, 96 // stride), name
    assert model.size_divisibility == 0
    block = BasicBlock if depth == 18 else BottleneckBlock
    assert all(isinstance(b, block) for stage in model.stages for b in stage)


def test_r50_block_counts_and_shortcuts():
    model = build_resnet_backbone(_cfg(50), ShapeSpec(channels=3))
    assert [len(getattr(model, f"res{k}")) for k in range(2, 6)] == [3, 4, 6, 3]
    for k in range(2, 6):
        stage = getattr(model, f"res{k}")
        assert stage[0].shortcut is not None
        assert all(b.shortcut is None for b in list(stage)[1:])
    assert model.stage_names == ("res2", "res3", "res4", "res5")


def test_stride_in_1x1_places_the_stride():
    on = build_resnet_backbone(_cfg(50, STRIDE_IN_1X1=True), ShapeSpec(channels=3))
    off = build_resnet_backbone(_cfg(50, STRIDE_IN_1X1=False), ShapeSpec(channels=3))
    assert on.res3[0].conv1.stride == (2, 2) and on.res3[0].conv2.stride == (1, 1)
    assert off.res3[0].conv1.stride == (1, 1) and off.res3[0].conv2.stride == (2, 2)
    assert on.res2[0].conv1.stride == (1, 1)  # res2 keeps the stem's resolution


def test_resnext_groups_and_width():
    model = build_resnet_backbone(_cfg(50, NUM_GROUPS=32, WIDTH_PER_GROUP=4), ShapeSpec(channels=3))
    conv2 = model.res2[0].conv2
    assert conv2.groups == 32
    assert conv2.weight.shape == (128, 4, 3, 3)  # 32 * 4 bottleneck channels
    assert model.res5[0].conv2.weight.shape == (1024, 32, 3, 3)


def test_res5_dilation_keeps_stride_16():
    model = build_resnet_backbone(_cfg(50, RES5_DILATION=2), ShapeSpec(channels=3))
    assert model.output_shape()["res5"].stride == 16
    assert model.res5[0].conv2.dilation == (2, 2) and model.res5[0].conv2.padding == (2, 2)
    assert model.res5[0].shortcut.stride == (1, 1)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64))["res5"].shape == (1, 2048, 4, 4)


def test_frozen_bn_and_freeze_at_2():
    cfg = _cfg(50, NORM="FrozenBN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    for name, param in model.named_parameters():
        frozen = name.startswith("stem.") or name.startswith("res2.")
        assert param.requires_grad != frozen, name
    norms = [m.norm for m in model.modules() if hasattr(m, "norm") and m.norm is not None]
    assert len(norms) == 1 + 16 * 3 + 4
    assert all(isinstance(n, FrozenBatchNorm2d) for n in norms)


def test_freeze_converts_batchnorm_of_frozen_stages_only():
    cfg = _cfg(18, NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(model.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.res2[1].conv2.norm, FrozenBatchNorm2d)
    assert isinstance(model.res3[0].conv1.norm, nn.BatchNorm2d)
    assert model.res3[0].conv1.weight.requires_grad
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    unfrozen = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_r18_rejects_wide_res2_and_deform():
    cfg = _cfg(18)
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        build_resnet_backbone(cfg, ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="DEFORM_ON_PER_STAGE"):
        build_resnet_backbone(
            _cfg(18, DEFORM_ON_PER_STAGE=[False, True, True, True]), ShapeSpec(channels=3)
        )
    with pytest.raises(ValueError, match="DEFORM_ON_PER_STAGE"):
        build_resnet_backbone(_cfg(50, DEFORM_ON_PER_STAGE=[True, True]), ShapeSpec(channels=3))


def test_deformable_stages_start_as_the_plain_network():
    """DEFORM_ON_PER_STAGE swaps in DeformBottleneckBlock whose only extra weights are
    conv2_offset (zero-initialised), so with a plain R50's weights it computes the same."""
    torch.manual_seed(0)
    plain = build_resnet_backbone(_cfg(50, NORM="FrozenBN"), ShapeSpec(channels=3)).eval()
    deform = build_resnet_backbone(
        _cfg(50, NORM="FrozenBN", DEFORM_ON_PER_STAGE=[False, True, False, True]),
        ShapeSpec(channels=3),
    ).eval()
    assert isinstance(deform.res3[0], DeformBottleneckBlock)
    assert isinstance(deform.res4[0], BottleneckBlock) and isinstance(deform.res5[2].conv2, DeformConv)
    missing, unexpected = deform.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert set(missing) == {
        f"{stage}.{i}.conv2_offset.{p}"
        for stage, n in (("res3", 4), ("res5", 3))
        for i in range(n)
        for p in ("weight", "bias")
    }
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(x), deform(x)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4)


def test_modulated_deform_block_layout():
    block = DeformBottleneckBlock(
        64, 256, bottleneck_channels=64, deform_modulated=True, deform_num_groups=2
    )
    assert block.conv2_offset.out_channels == 27 * 2
    assert isinstance(block.conv2, ModulatedDeformConv) and block.conv2.bias is None
    assert torch.all(block.conv2_offset.weight == 0)
    assert block(torch.randn(1, 64, 8, 8)).shape == (1, 256, 8, 8)
    with pytest.raises(ValueError, match="DEPTH"):
        build_resnet_backbone(_cfg(42), ShapeSpec(channels=3))


def test_out_features_truncate_unused_stages():
    cfg = _cfg(18)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["stem", "res3"]
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert model.stage_names == ("res2", "res3")
    assert not hasattr(model, "res4")
    out = model(torch.zeros(1, 3, 32, 32))
    assert list(out) == ["stem", "res3"]
    assert out["stem"].shape == (1, 64, 8, 8)


def test_build_backbone_defaults_input_channels_from_pixel_mean():
    cfg = _cfg(18)
    cfg.MODEL.PIXEL_MEAN = [0.5]
    cfg.MODEL.PIXEL_STD = [1.0]
    model = build_backbone(cfg)
    assert model.stem.conv1.weight.shape == (64, 1, 7, 7)
    assert BACKBONE_REGISTRY.get("build_resnet_backbone") is build_resnet_backbone


def test_stem_and_blocks_forward_by_hand():
    stem = BasicStem(in_channels=2, out_channels=4, norm="")
    assert stem.stride == 4 and stem.out_channels == 4
    assert stem(torch.zeros(1, 2, 15, 17)).shape == (1, 4, 4, 5)
    # A BasicBlock with zeroed convs and identity shortcut computes relu(x).
    block = BasicBlock(3, 3, stride=1, norm="")
    assert block.shortcut is None
    for p in block.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(block(x.clone()), torch.relu(x))


def test_c2_msra_init():
    block = BottleneckBlock(64, 256, bottleneck_channels=64, norm="")
    w = block.conv3.weight.detach()  # fan_out = 256 * 1 * 1
    assert abs(float(w.std()) - (2.0 / 256) ** 0.5) < 0.01
    assert block.conv3.bias is None


def test_make_stage_per_block_arguments():
    blocks = make_stage(
        BottleneckBlock,
        3,
        in_channels=16,
        out_channels=32,
        bottleneck_channels=8,
        stride_per_block=[2, 1, 1],
        dilation_per_block=[1, 1, 2],
        norm="",
    )
    assert [b.stride for b in blocks] == [2, 1, 1]
    assert [b.in_channels for b in blocks] == [16, 32, 32]
    assert blocks[2].conv2.dilation == (2, 2)
    with pytest.raises(ValueError):
        ResNet.make_stage(BasicBlock, 2, in_channels=4, out_channels=4, stride_per_block=[1])
    with pytest.raises(ValueError):
        ResNet.make_stage(
            BasicBlock, 1, in_channels=4, out_channels=4, stride=1, stride_per_block=[1]
        )


def test_make_default_stages_and_classifier():
    stages = ResNet.make_default_stages(18, norm="BN")
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    model = ResNet(BasicStem(norm="BN"), stages, num_classes=10)
    assert model._out_features == ["linear"]
    out = model(torch.randn(2, 3, 32, 32))
    assert out["linear"].shape == (2, 10)
    stages50 = ResNet.make_default_stages(50)
    assert stages50[0][0].conv1.out_channels == 64 and stages50[3][0].out_channels == 2048
    assert all(isinstance(b, CNNBlockBase) for s in stages50 for b in s)


def test_resnet_validates_inputs():
    stages = ResNet.make_default_stages(18)
    with pytest.raises(ValueError):
        ResNet(BasicStem(), stages, out_features=["res9"])
    model = ResNet(BasicStem(), stages, out_features=["res2"])
    with pytest.raises(ValueError):
        model(torch.zeros(3, 32, 32))
