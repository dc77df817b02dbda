"""NormFCBoxHead, the June baseline's box head: plain convs, then FC -> GroupNorm -> ReLU."""
import os

import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec, build_mask_head
from sephnet.config import validate_sephnet_config
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.norm_fc_head import NormFCBoxHead

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def _row(sephnet_cfg, name):
    cfg = sephnet_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "coco", name))
    validate_sephnet_config(cfg)
    return cfg


def test_conv_then_group_normalised_fcs_by_value():
    torch.manual_seed(0)
    shape = ShapeSpec(channels=4, height=3, width=3)
    head = NormFCBoxHead(input_shape=shape, num_conv=1, conv_dim=6, num_fc=2, fc_dim=64)
    head = head.double()
    with torch.no_grad():  # non-trivial GN affine parameters
        for fc in (head.fc1, head.fc2):
            fc.norm.weight.uniform_(0.5, 1.5)
            fc.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    y = F.relu(F.conv2d(x, head.conv1.weight, head.conv1.bias, padding=1)).flatten(1)
    for fc in (head.fc1, head.fc2):
        assert fc.bias is None
        z = F.linear(y, fc.weight)
        y = F.relu(F.group_norm(z, 32, fc.norm.weight, fc.norm.bias, eps=fc.norm.eps))
    out = head(x)
    torch.testing.assert_close(out.cls, y, rtol=1e-12, atol=1e-12)
    assert out.box is out.cls and out.iou is None
    assert head.output_shapes == {"cls": ShapeSpec(channels=64), "box": ShapeSpec(channels=64)}
    assert head(torch.zeros(0, 4, 3, 3, dtype=torch.float64)).cls.shape == (0, 64)


def test_needs_an_fc():
    with pytest.raises(ValueError, match="num_fc=0"):
        NormFCBoxHead(input_shape=ShapeSpec(channels=4, height=3, width=3), num_conv=1,
                      conv_dim=4, num_fc=0, fc_dim=8)


@pytest.mark.parametrize(
    "row", ["Mask-RCNN-FPN-3-baseline.yaml", "Mask-RCNN-FPN-C3.yaml", "Mask-RCNN-FPN-recipe1.yaml"]
)
def test_baseline_rows_build_the_gn_fc_head_and_a_normalised_mask_deconv(row, sephnet_cfg):
    """The original's baseline: 2 FCs x 1024 with GN(32) + ReLU; the BN mask deconv + ReLU."""
    cfg = _row(sephnet_cfg, row)
    head = SEPH_BOX_HEAD_REGISTRY.get(cfg.MODEL.SEPH.BOX_HEAD.NAME)(
        cfg, ShapeSpec(channels=256, height=7, width=7)
    )
    assert isinstance(head, NormFCBoxHead)
    fcs = [m for name, m in head.named_children() if name.startswith("fc")]
    assert [fc.out_features for fc in fcs] == [1024, 1024]
    assert all(isinstance(fc.norm, torch.nn.GroupNorm) and fc.norm.num_groups == 32 for fc in fcs)
    assert all(isinstance(fc.activation, torch.nn.ReLU) for fc in fcs)
    assert not any(name.startswith("conv") for name, _ in head.named_children())

    mask = build_mask_head(cfg, ShapeSpec(channels=256, height=14, width=14)).eval().double()
    assert isinstance(mask.deconv_norm, torch.nn.BatchNorm2d) and mask.deconv.bias is None
    with torch.no_grad():
        mask.deconv_norm.running_mean.uniform_(-1, 1)
        mask.deconv_norm.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 256, 14, 14, dtype=torch.float64)
        for conv in mask.conv_norm_relus:
            x = conv(x)
        bn = mask.deconv_norm
        expected = F.relu(F.batch_norm(
            F.conv_transpose2d(x, mask.deconv.weight, stride=2),
            bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps,
        ))
        got = mask.deconv_relu(mask.deconv_norm(mask.deconv(x)))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
