"""IouGatedConvBoxHead (V4): the IoU tower's sigmoid FC gates the box tower's channels."""
import torch

from sephnet.backend import ShapeSpec
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import FCClsConvBoxHead
from sephnet.modeling.roi_heads.box_heads.iou_attention_head import IouGatedConvBoxHead

C, S = 8, 5
SHAPE = ShapeSpec(channels=C, height=S, width=S)


def _inner(iou_tower, iou_num_conv=0, iou_num_fc=2):
    return FCClsConvBoxHead(input_shape=SHAPE, num_fc=1, fc_dim=12, num_conv=2, conv_dim=6,
                            iou_tower=iou_tower, iou_num_conv=iou_num_conv, iou_num_fc=iou_num_fc)


def test_gate_multiplies_box_channels_by_sigmoid_of_iou_features():
    torch.manual_seed(0)
    head = IouGatedConvBoxHead(head=_inner(True))
    x = torch.randn(4, C, S, S)
    out = head(x)
    ref = head.head(x)
    g = torch.sigmoid(ref.iou @ head.gate.weight.T + head.gate.bias)  # [R, conv_dim]
    assert g.shape == (4, 6)
    torch.testing.assert_close(out.box, ref.box * g[:, :, None, None])
    torch.testing.assert_close(out.cls, ref.cls)
    torch.testing.assert_close(out.iou, ref.iou)
    assert head.output_shapes == head.head.output_shapes


def test_spatial_iou_features_are_flattened_for_the_gate():
    head = IouGatedConvBoxHead(head=_inner(True, iou_num_conv=1, iou_num_fc=0))
    assert head.gate.in_features == 6 * S * S
    x = torch.randn(2, C, S, S, requires_grad=True)
    out = head(x)
    (out.box.sum() + out.iou.sum()).backward()
    assert head.gate.weight.grad.abs().sum() > 0


def test_without_the_iou_branch_it_is_the_sephv2_head():
    head = IouGatedConvBoxHead(head=_inner(False))
    assert head.gate is None
    x = torch.randn(2, C, S, S)
    out, ref = head(x), head.head(x)
    torch.testing.assert_close(out.box, ref.box)
    assert out.iou is None
