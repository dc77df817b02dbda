"""ValidConvFCHead (V3): widening VALID convs then FCs by value, independent towers, limits."""
import pytest
import torch
import torch.nn.functional as F

from sephnet.backend import ShapeSpec
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import ValidConvFCHead

C, S = 8, 7
SHAPE = ShapeSpec(channels=C, height=S, width=S)


def test_three_valid_convs_shrink_7_to_1_with_widening_channels_then_fcs_by_value():
    torch.manual_seed(0)
    head = ValidConvFCHead(input_shape=SHAPE, num_conv=3, conv_dim=4, num_fc=2, fc_dim=6,
                           width_step=2)
    assert [m.out_channels for m in (head.cls_tower.conv1, head.cls_tower.conv2,
                                     head.cls_tower.conv3)] == [6, 8, 10]
    assert head.output_shapes == {"cls": ShapeSpec(channels=6), "box": ShapeSpec(channels=6)}
    x = torch.randn(3, C, S, S)
    out = head(x)
    for tower, value in ((head.cls_tower, out.cls), (head.box_tower, out.box)):
        y = x
        for k in (1, 2, 3):
            conv = getattr(tower, f"conv{k}")
            y = F.relu(F.conv2d(y, conv.weight, conv.bias))  # VALID: no padding
        assert y.shape == (3, 10, 1, 1)
        for k in (1, 2):
            fc = getattr(tower, f"fc{k}")
            y = F.relu(F.linear(y.flatten(1), fc.weight, fc.bias))
        torch.testing.assert_close(value, y)
    assert (out.cls - out.box).abs().max() > 0  # own weights


def test_conv_only_towers_keep_the_shrunk_map_and_read_hook_inputs():
    head = ValidConvFCHead(input_shape=SHAPE, num_conv=2, conv_dim=4, num_fc=0, fc_dim=6)
    assert head.output_shapes["box"] == ShapeSpec(channels=4 + 128, height=3, width=3)
    x, y = torch.randn(2, C, S, S), torch.randn(2, C, S, S)
    out = head(DecoupledFeatures(cls=x, box=y))
    torch.testing.assert_close(out.box, head.box_tower(y))
    torch.testing.assert_close(out.cls, head.cls_tower(x))


@pytest.mark.parametrize("num_conv,num_fc", [(4, 1), (0, 0)])
def test_impossible_towers_are_rejected(num_conv, num_fc):
    with pytest.raises(ValueError, match="num_conv"):
        ValidConvFCHead(input_shape=SHAPE, num_conv=num_conv, conv_dim=4, num_fc=num_fc, fc_dim=6)
