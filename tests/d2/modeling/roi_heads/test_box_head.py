"""FastRCNNConvFCHead: structure (detectron2 state_dict names), shapes, init and config build."""
import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.roi_heads.box_head import (
    ROI_BOX_HEAD_REGISTRY,
    FastRCNNConvFCHead,
    build_box_head,
)


def test_conv_fc_head_state_dict_names_and_shapes():
    head = FastRCNNConvFCHead(
        ShapeSpec(channels=8, height=7, width=7),
        conv_dims=[32, 32],
        fc_dims=[16, 12],
        conv_norm="GN",
    )
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    # detectron2 v0.6: Conv2d with norm has no bias and a ``norm`` child; fcs are plain Linear
    assert shapes == {
        "conv1.weight": (32, 8, 3, 3),
        "conv1.norm.weight": (32,),
        "conv1.norm.bias": (32,),
        "conv2.weight": (32, 32, 3, 3),
        "conv2.norm.weight": (32,),
        "conv2.norm.bias": (32,),
        "fc1.weight": (16, 32 * 7 * 7),
        "fc1.bias": (16,),
        "fc2.weight": (12, 16),
        "fc2.bias": (12,),
    }
    assert [name for name, _ in head.named_children()] == [
        "conv1", "conv2", "flatten", "fc1", "fc_relu1", "fc2", "fc_relu2",
    ]
    out = head(torch.randn(3, 8, 7, 7))
    assert out.shape == (3, 12) and torch.all(out >= 0)
    assert head.output_shape == ShapeSpec(channels=12)


def test_conv_only_head_keeps_spatial_shape_and_bias():
    head = FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[3], fc_dims=[])
    assert set(head.state_dict()) == {"conv1.weight", "conv1.bias"}
    assert head(torch.randn(2, 4, 5, 5)).shape == (2, 3, 5, 5)
    assert head.output_shape == ShapeSpec(channels=3, height=5, width=5)


def test_init_zero_biases_and_fan_scaled_weights():
    head = FastRCNNConvFCHead(
        ShapeSpec(channels=32, height=7, width=7), conv_dims=[64], fc_dims=[256]
    )
    assert torch.all(head.conv1.bias == 0) and torch.all(head.fc1.bias == 0)
    # c2_msra_fill: normal with std sqrt(2 / fan_out), fan_out = 64 * 9
    assert head.conv1.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    # c2_xavier_fill: uniform in +-sqrt(3 / fan_in), fan_in = 64 * 49
    bound = (3 / (64 * 49)) ** 0.5
    assert head.fc1.weight.abs().max().item() <= bound
    assert head.fc1.weight.abs().max().item() > 0.95 * bound


def test_empty_input_and_no_layers_error():
    head = FastRCNNConvFCHead(ShapeSpec(channels=4, height=3, width=3), conv_dims=[4], fc_dims=[8])
    assert head(torch.zeros(0, 4, 3, 3)).shape == (0, 8)
    with pytest.raises(ValueError, match="NUM_CONV"):
        FastRCNNConvFCHead(ShapeSpec(channels=4, height=3, width=3), conv_dims=[], fc_dims=[])


def test_build_box_head_from_config():
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 5
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 9
    head = build_box_head(cfg, ShapeSpec(channels=4, height=7, width=7))
    assert isinstance(head, FastRCNNConvFCHead)
    assert head.conv1.weight.shape == (5, 4, 3, 3) and head.fc1.weight.shape == (9, 5 * 49)
    assert "FastRCNNConvFCHead" in ROI_BOX_HEAD_REGISTRY
