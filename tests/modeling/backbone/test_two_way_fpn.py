"""TwoWayFPN: two independent FPNs, equal declared shapes, (rpn, roi) pair."""
import pytest
import torch

from sephnet.backend import ShapeSpec
from sephnet.modeling.backbone.tf_fpn import TFStyleFPN
from sephnet.modeling.backbone.two_way_fpn import TwoWayFPN

from .hooks.conftest import check_declared, make_features

BOTTOM_UP = {f"res{l}": ShapeSpec(channels=4 * l, stride=2**l) for l in (3, 4, 5, 6)}


def _fpn(fuse="sum", top=0):
    return TFStyleFPN(input_shapes=BOTTOM_UP, in_features=["res3", "res4", "res5", "res6"],
                      out_channels=8, fuse_type=fuse, num_top_levels=top)


@pytest.mark.parametrize("fuse", ["sum", "wsum"])
def test_returns_two_dicts_from_independent_fpns(fuse):
    neck = TwoWayFPN(rpn_fpn=_fpn(fuse), roi_fpn=_fpn(fuse))
    assert neck.two_way and list(neck.output_shape()) == ["p3", "p4", "p5", "p6"]
    feats = make_features(BOTTOM_UP)
    rpn, roi = neck(feats)
    check_declared(rpn, neck.output_shape())
    check_declared(roi, neck.output_shape())
    torch.testing.assert_close(rpn["p4"], neck.rpn_fpn(feats)["p4"])
    torch.testing.assert_close(roi["p4"], neck.roi_fpn(feats)["p4"])
    assert not torch.allclose(rpn["p4"], roi["p4"])  # separately initialised
    roi["p3"].sum().backward()
    assert all(p.grad is None for p in neck.rpn_fpn.parameters())
    assert neck.size_divisibility == 64


def test_fpns_with_different_outputs_are_rejected():
    with pytest.raises(ValueError, match="different outputs"):
        TwoWayFPN(rpn_fpn=_fpn(top=1), roi_fpn=_fpn(top=0))
