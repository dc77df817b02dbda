"""build_seph_resnet_fpn_backbone: detectron2's ResNet-FPN by default, EvoNormS0, C5 top block."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    BACKBONE_REGISTRY,
    FPN,
    BitMasks,
    Boxes,
    EventStorage,
    Instances,
    LastLevelMaxPool,
    LastLevelP6P7,
    ShapeSpec,
    build_backbone,
    build_model,
    build_resnet_fpn_backbone,
)
from sephnet.config import validate_sephnet_config
from sephnet.layers.evonorm import EvoNormS0
from sephnet.modeling.backbone.seph_fpn import (
    TOP_BLOCKS,
    LastLevelStridedConvs,
    build_seph_resnet_fpn_backbone,
    make_top_block,
)
from sephnet.modeling.proposal_generator.rpn_head import SephRPNHead
from sephnet.modeling.roi_heads.mask_head import SephMaskRCNNConvUpsampleHead

IMAGE = 64  # divisible by the FPN's size_divisibility (32)


def _cfg(sephnet_cfg, **seph):
    """A narrow R-50 FPN config (res5: 256 channels; 32 FPN channels) for the seph builder."""
    cfg = sephnet_cfg(narrow_r50=8)
    cfg.MODEL.BACKBONE.NAME = "build_seph_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEPH.EVONORM.GROUPS = 8
    for key, value in seph.items():
        cfg.merge_from_list([key, value])
    return cfg


def _image():
    return torch.randn(2, 3, IMAGE, IMAGE)


def _check_outputs_match_output_shape(backbone, outputs):
    shapes = backbone.output_shape()
    assert list(outputs) == list(shapes)
    for name, spec in shapes.items():
        side = -(-IMAGE // spec.stride)  # ceil: stride-2 convs round up
        assert outputs[name].shape == (2, spec.channels, side, side), name


def test_builder_is_registered():
    assert BACKBONE_REGISTRY.get("build_seph_resnet_fpn_backbone") is build_seph_resnet_fpn_backbone
    assert TOP_BLOCKS[0] == "LastLevelMaxPool"


def test_default_keys_give_detectron2_resnet_fpn(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    ours = build_backbone(cfg).eval()
    upstream = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert isinstance(ours, FPN) and isinstance(ours.top_block, LastLevelMaxPool)
    # Same structure: the upstream weights load with no missing or unexpected keys.
    ours.load_state_dict(upstream.state_dict(), strict=True)
    x = _image()
    with torch.no_grad():
        out, ref = ours(x), upstream(x)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for name in ref:
        torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0)
    assert ours.size_divisibility == upstream.size_divisibility == 32


def test_evonorm_fpn_shapes_strides_and_norm_placement(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{"MODEL.FPN.NORM": "EvoNormS0", "MODEL.SEPH.EVONORM.EPS": 1e-3})
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "p2": (32, 4), "p3": (32, 8), "p4": (32, 16), "p5": (32, 32), "p6": (32, 64)
    }
    x = _image().requires_grad_()
    outputs = backbone(x)
    _check_outputs_match_output_shape(backbone, outputs)
    # The original's FPN: 1x1 laterals with a bias and no norm; the 3x3 outputs carry the
    # norm (and so no bias), with no activation after it.
    stages = (2, 3, 4, 5)
    for stage in stages:
        lateral = getattr(backbone, f"fpn_lateral{stage}")
        assert lateral.norm is None and lateral.activation is None
        assert lateral.bias is not None
        output = getattr(backbone, f"fpn_output{stage}")
        assert isinstance(output.norm, EvoNormS0)
        assert (output.norm.groups, output.norm.eps) == (8, 1e-3)
        assert output.bias is None and output.activation is None
    # The top-down pass uses the replaced laterals, finest last.
    assert backbone.lateral_convs == [getattr(backbone, f"fpn_lateral{s}") for s in stages[::-1]]
    sum(o.sum() for o in outputs.values()).backward()
    assert x.grad.abs().sum() > 0


def test_evonorm_fpn_laterals_are_plain_affine_maps_by_value(sephnet_cfg):
    """P5 = output5(W5 C5 + b5): no norm (and so no EvoNormS0 non-linearity) on the lateral."""
    cfg = _cfg(sephnet_cfg, **{"MODEL.FPN.NORM": "EvoNormS0"})
    backbone = build_backbone(cfg).eval().double()
    x = _image().double()
    with torch.no_grad():
        c5 = backbone.bottom_up(x)["res5"]
        lateral = backbone.fpn_lateral5
        expected_lateral = F.conv2d(c5, lateral.weight, lateral.bias)
        torch.testing.assert_close(lateral(c5), expected_lateral, rtol=1e-12, atol=1e-12)
        # Affine, hence a * (L(c) - b) = L(a c) - b for any a (EvoNormS0 would break it).
        scaled = lateral(3.0 * c5) - lateral.bias[None, :, None, None]
        torch.testing.assert_close(
            scaled, 3.0 * (expected_lateral - lateral.bias[None, :, None, None]),
            rtol=1e-10, atol=1e-10,
        )
        p5 = backbone(x)["p5"]
        torch.testing.assert_close(p5, backbone.fpn_output5(expected_lateral), rtol=1e-12, atol=1e-12)


def test_strided_conv_top_block_reads_c5_with_the_fpn_norm(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        **{"MODEL.FPN.NORM": "EvoNormS0", "MODEL.SEPH.FPN.TOP_BLOCK": "LastLevelStridedConvs"}
    )
    backbone = build_backbone(cfg).eval()
    block = backbone.top_block
    assert isinstance(block, LastLevelStridedConvs) and block.in_feature == "res5"
    x = _image()
    with torch.no_grad():
        outputs = backbone(x)
        c5 = backbone.bottom_up(x)["res5"]
        conv = block.convs[0]
        assert conv.weight.shape == (32, 256, 3, 3) and conv.bias is None
        expected_p6 = conv.norm(F.conv2d(c5, conv.weight, stride=2, padding=1))
    torch.testing.assert_close(outputs["p6"], expected_p6)
    assert backbone.output_shape()["p6"] == ShapeSpec(channels=32, stride=64)


@pytest.mark.parametrize("norm,relu_between", [("EvoNormS0", False), ("", True), ("GN", True)])
def test_strided_conv_top_block_with_two_levels(norm, relu_between, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{
        "MODEL.FPN.NORM": norm,
        "MODEL.SEPH.FPN.TOP_BLOCK": "LastLevelStridedConvs",
        "MODEL.SEPH.FPN.TOP_BLOCK_NUM_LEVELS": 2,
    })
    backbone = build_backbone(cfg).eval()
    assert backbone.output_shape()["p7"] == ShapeSpec(channels=32, stride=128)
    x = _image()
    with torch.no_grad():
        outputs = backbone(x)
        _check_outputs_match_output_shape(backbone, outputs)
        second = backbone.top_block.convs[1]
        p6 = F.relu(outputs["p6"]) if relu_between else outputs["p6"]
        expected = F.conv2d(p6, second.weight, second.bias, stride=2, padding=1)
        if second.norm is not None:
            expected = second.norm(expected)
    assert (second.bias is None) == (norm != "")
    torch.testing.assert_close(outputs["p7"], expected)


def test_p6p7_top_block_is_detectron2s(sephnet_cfg):
    backbone = build_backbone(_cfg(sephnet_cfg, **{"MODEL.SEPH.FPN.TOP_BLOCK": "LastLevelP6P7"}))
    assert isinstance(backbone.top_block, LastLevelP6P7)
    assert backbone.top_block.in_feature == "res5"
    assert [k for k in backbone.output_shape()] == ["p2", "p3", "p4", "p5", "p6", "p7"]
    _check_outputs_match_output_shape(backbone, backbone(_image()))


def test_make_top_block_errors():
    shapes = {"res5": ShapeSpec(channels=16, stride=32)}
    with pytest.raises(ValueError, match="TOP_BLOCK='P6'.*LastLevelStridedConvs"):
        make_top_block("P6", bottom_up_shapes=shapes, in_feature="res5", out_channels=8)
    with pytest.raises(ValueError, match="'res4'.*\\['res5'\\]"):
        make_top_block(
            "LastLevelStridedConvs", bottom_up_shapes=shapes, in_feature="res4", out_channels=8
        )
    with pytest.raises(ValueError, match="num_levels=0"):
        LastLevelStridedConvs(16, 8, num_levels=0)


def test_strided_conv_block_standalone_shapes():
    block = LastLevelStridedConvs(16, 8, num_levels=3, norm="EvoNormS0", norm_groups=4)
    outs = block(torch.randn(2, 16, 9, 9))
    assert [o.shape[-1] for o in outs] == [5, 3, 2]
    assert all(o.shape[:2] == (2, 8) for o in outs)
    assert not any(isinstance(m, nn.ReLU) for m in block.modules())


def _evonorm_mask_rcnn_cfg(sephnet_cfg):
    """Narrow Mask R-CNN with EvoNormS0 in the FPN, the C5 top block, the RPN and mask heads."""
    cfg = _cfg(sephnet_cfg, **{
        "MODEL.FPN.NORM": "EvoNormS0",
        "MODEL.SEPH.FPN.TOP_BLOCK": "LastLevelStridedConvs",
        "MODEL.RPN.HEAD_NAME": "SephRPNHead",
        "MODEL.SEPH.RPN_HEAD.NORM": "EvoNormS0",
        "MODEL.MASK_ON": True,
        "MODEL.ROI_MASK_HEAD.NAME": "SephMaskRCNNConvUpsampleHead",
        "MODEL.ROI_MASK_HEAD.NORM": "EvoNormS0",
    })
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.INPUT.MIN_SIZE_TEST = IMAGE
    return cfg


def test_evonorm_everywhere_mask_rcnn_trains_and_predicts(sephnet_cfg):
    cfg = _evonorm_mask_rcnn_cfg(sephnet_cfg)
    validate_sephnet_config(cfg)
    model = build_model(cfg)
    assert isinstance(model.proposal_generator.rpn_head, SephRPNHead)
    assert isinstance(model.roi_heads.mask_head, SephMaskRCNNConvUpsampleHead)
    # FPN: 4 outputs (laterals carry no norm) + P6; RPN: 5 levels; mask: 2 convs + deconv.
    assert sum(isinstance(m, EvoNormS0) for m in model.modules()) == 4 + 1 + 5 + 3

    masks = torch.zeros(2, IMAGE, IMAGE, dtype=torch.bool)
    masks[0, 8:40, 10:30] = True
    masks[1, 30:60, 20:62] = True
    instances = Instances((IMAGE, IMAGE))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 8.0, 30.0, 40.0], [20.0, 30.0, 62.0, 60.0]]))
    instances.gt_classes = torch.tensor([0, 2])
    instances.gt_masks = BitMasks(masks)
    image = torch.randint(0, 255, (3, IMAGE, IMAGE)).float()
    batch = [{"image": image, "instances": instances}] * 2

    model.train()
    with EventStorage():
        losses = model(batch)
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for level in range(5):
        assert model.proposal_generator.rpn_head.norms[level].weight.grad is not None

    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": image, "height": IMAGE, "width": IMAGE}])
    assert result["instances"].image_size == (IMAGE, IMAGE)


def test_sephv14_layout_c3_to_c5_plus_p6_from_c5(sephnet_cfg):
    # The sephv14 family: FPN on C3-C5 with EvoNormS0, P6 = conv3x3/2(C5); RPN/ROI use P3-P6.
    cfg = _cfg(sephnet_cfg,
        **{"MODEL.FPN.NORM": "EvoNormS0", "MODEL.SEPH.FPN.TOP_BLOCK": "LastLevelStridedConvs"}
    )
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    backbone = build_backbone(cfg)
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {
        "p3": 8, "p4": 16, "p5": 32, "p6": 64
    }
    assert backbone.top_block.in_feature == "res5"
    assert backbone.size_divisibility == 32
    _check_outputs_match_output_shape(backbone, backbone(_image()))
