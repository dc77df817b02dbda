"""SephRPNHead: StandardRPNHead without a norm, a separate norm per level with one."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    RPN_HEAD_REGISTRY,
    ImageList,
    ShapeSpec,
    StandardRPNHead,
    build_proposal_generator,
    import_module,
)
from sephnet.layers.evonorm import EvoNormS0
from sephnet.modeling.proposal_generator.rpn_head import SephRPNHead

build_rpn_head = import_module("modeling.proposal_generator.rpn").build_rpn_head

SIZES = (16, 8, 4)  # three levels, strides 4/8/16 of a 64x64 image


def _features(channels=32):
    return [torch.randn(2, channels, s, s) for s in SIZES]


def _cfg(sephnet_cfg, norm=""):
    cfg = sephnet_cfg()
    cfg.MODEL.RPN.HEAD_NAME = "SephRPNHead"
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.SEPH.RPN_HEAD.NORM = norm
    cfg.MODEL.SEPH.EVONORM.GROUPS = 8
    return cfg


def _shapes(channels=32):
    return [ShapeSpec(channels=channels, stride=s) for s in (4, 8, 16)]


def test_seph_rpn_head_is_registered():
    assert RPN_HEAD_REGISTRY.get("SephRPNHead") is SephRPNHead


def test_without_norm_equals_standard_rpn_head_with_the_same_weights():
    standard = StandardRPNHead(in_channels=32, num_anchors=3, box_dim=4)
    seph = SephRPNHead(in_channels=32, num_anchors=3, num_levels=3)
    assert seph.norms is None
    # Same parameter names: the standard head's weights load strictly.
    seph.load_state_dict(standard.state_dict(), strict=True)
    feats = _features()
    ref_logits, ref_deltas = standard(feats)
    logits, deltas = seph(feats)
    for a, b in zip(logits + deltas, ref_logits + ref_deltas):
        assert torch.equal(a, b)


def test_output_shapes_per_level():
    head = SephRPNHead(in_channels=32, num_anchors=3, num_levels=3, norm="EvoNormS0", norm_groups=8)
    logits, deltas = head(_features())
    assert [tuple(t.shape) for t in logits] == [(2, 3, s, s) for s in SIZES]
    assert [tuple(t.shape) for t in deltas] == [(2, 12, s, s) for s in SIZES]


def test_evonorm_per_level_matches_hand_computation_without_relu():
    head = SephRPNHead(in_channels=32, num_anchors=3, num_levels=3, norm="EvoNormS0", norm_groups=8)
    assert head.conv.bias is None and head.activation is None
    with torch.no_grad():
        for level, norm in enumerate(head.norms):
            norm.weight.fill_(1.0 + level)
            norm.v.fill_(0.5 * level)
    feats = _features()
    logits, deltas = head(feats)
    for level, x in enumerate(feats):
        hidden = head.norms[level](F.conv2d(x, head.conv.weight, padding=1))
        assert (hidden < 0).any()  # not clipped: EvoNorm has its own non-linearity
        obj = head.objectness_logits
        box = head.anchor_deltas
        torch.testing.assert_close(logits[level], F.conv2d(hidden, obj.weight, obj.bias))
        torch.testing.assert_close(deltas[level], F.conv2d(hidden, box.weight, box.bias))


def test_per_level_norms_have_distinct_parameters():
    head = SephRPNHead(in_channels=32, num_anchors=3, num_levels=3, norm="EvoNormS0", norm_groups=8)
    assert len(head.norms) == 3 and all(isinstance(n, EvoNormS0) for n in head.norms)
    pointers = {p.data_ptr() for n in head.norms for p in n.parameters()}
    assert len(pointers) == 3 * 3  # weight, bias, v for each level, none shared
    keys = set(head.state_dict())
    assert {f"norms.{lvl}.{p}" for lvl in range(3) for p in ("weight", "bias", "v")} <= keys

    # A loss on level 1 only reaches level 1's norm.
    logits, _ = head(_features())
    logits[1].sum().backward()
    grads = [n.weight.grad for n in head.norms]
    assert grads[0] is None or grads[0].abs().sum() == 0
    assert grads[1].abs().sum() > 0
    assert grads[2] is None or grads[2].abs().sum() == 0

    # Changing level 0's norm changes level 0's output only.
    feats = _features()
    before, _ = head(feats)
    with torch.no_grad():
        head.norms[0].bias.add_(1.0)
    after, _ = head(feats)
    assert not torch.allclose(after[0], before[0])
    assert torch.equal(after[1], before[1]) and torch.equal(after[2], before[2])


def test_gn_norm_keeps_the_relu():
    head = SephRPNHead(in_channels=32, num_anchors=3, num_levels=2, norm="GN")
    assert isinstance(head.activation, nn.ReLU) and head.conv.bias is None
    assert all(isinstance(n, nn.GroupNorm) for n in head.norms)
    x = torch.randn(2, 32, 8, 8)
    logits, _ = head([x, x])
    hidden = F.relu(head.norms[0](F.conv2d(x, head.conv.weight, padding=1)))
    obj = head.objectness_logits
    torch.testing.assert_close(logits[0], F.conv2d(hidden, obj.weight, obj.bias))


def test_wrong_number_of_levels_raises():
    head = SephRPNHead(in_channels=32, num_anchors=3, num_levels=3)
    with pytest.raises(ValueError, match="built for 3 levels.*got 2"):
        head(_features()[:2])


def test_from_config_takes_levels_from_rpn_in_features_and_norm_from_seph_key(sephnet_cfg):
    head = build_rpn_head(_cfg(sephnet_cfg, "EvoNormS0"), _shapes())
    assert isinstance(head, SephRPNHead)
    assert head.num_levels == 3 and len(head.norms) == 3
    assert head.norms[0].groups == 8
    assert head.objectness_logits.out_channels == 3 and head.anchor_deltas.out_channels == 12
    default = build_rpn_head(_cfg(sephnet_cfg, ""), _shapes())
    assert default.norms is None and isinstance(default.activation, nn.ReLU)


def test_from_config_errors_name_the_keys(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    cfg.MODEL.RPN.CONV_DIMS = [32, 32]
    with pytest.raises(ValueError, match="MODEL.RPN.CONV_DIMS"):
        build_rpn_head(cfg, _shapes())
    shapes = _shapes()
    shapes[1] = ShapeSpec(channels=16, stride=8)
    with pytest.raises(ValueError, match="channels must be equal"):
        build_rpn_head(_cfg(sephnet_cfg), shapes)


def test_runs_inside_the_backend_rpn(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, "EvoNormS0")
    rpn = build_proposal_generator(cfg, dict(zip(["p2", "p3", "p4"], _shapes()))).eval()
    assert isinstance(rpn.rpn_head, SephRPNHead)
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (60, 50)])
    with torch.no_grad():
        proposals, losses = rpn(images, dict(zip(["p2", "p3", "p4"], _features())))
    assert losses == {}
    assert len(proposals) == 2
    assert all(len(p) > 0 and p.proposal_boxes.tensor.shape[1] == 4 for p in proposals)
