"""HookedBackbone around a STUB bottom-up (fixed maps, known strides): contract and routing."""
import pytest
import torch

from sephnet.backend import Backbone, ShapeSpec, build_backbone
from sephnet.config import validate_sephnet_config
from sephnet.modeling.backbone.hooked_backbone import HookedBackbone
from sephnet.modeling.backbone.hooks import (
    BalanceBackboneHook,
    FusionBackboneHook,
    NonLocalBackboneHook,
    SEBackboneHook,
)
from sephnet.modeling.backbone.seph_fpn import LastLevelStridedConvs
from sephnet.modeling.backbone.tf_fpn import TFStyleFPN
from sephnet.modeling.backbone.two_way_fpn import TwoWayFPN

IMAGE = 64


class StubBottomUp(Backbone):
    """res2..res5 maps: a fixed random projection of the pooled image (no ResNet)."""

    def __init__(self, size_divisibility=0):
        super().__init__()
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_channels = {f"res{l}": 4 * l for l in (2, 3, 4, 5)}
        self._out_feature_strides = {f"res{l}": 2**l for l in (2, 3, 4, 5)}
        self.mix = torch.nn.ModuleDict(
            {k: torch.nn.Conv2d(3, c, 1) for k, c in self._out_feature_channels.items()}
        )
        self._div = size_divisibility

    @property
    def size_divisibility(self):
        return self._div

    def forward(self, x):
        return {k: m(torch.nn.functional.avg_pool2d(x, self._out_feature_strides[k]))
                for k, m in self.mix.items()}


def _check(backbone, out):
    shapes = backbone.output_shape()
    assert list(out) == list(shapes)
    for k, s in shapes.items():
        assert out[k].shape[1:] == (s.channels, IMAGE // s.stride, IMAGE // s.stride), k


def test_no_neck_no_hooks_is_the_bottom_up_itself():
    stub = StubBottomUp(size_divisibility=32)
    wrapped = HookedBackbone(bottom_up=stub)
    x = torch.randn(2, 3, IMAGE, IMAGE)
    out = wrapped(x)
    ref = stub(x)
    assert all(torch.equal(out[k], ref[k]) for k in ref)
    assert wrapped.output_shape() == stub.output_shape()
    assert wrapped.size_divisibility == 32 and not wrapped.returns_two_dicts


def test_full_chain_declares_what_it_returns_and_keeps_divisibility():
    stub = StubBottomUp(size_divisibility=16)
    extra = LastLevelStridedConvs(20, 24, num_levels=1, in_feature="res5")
    shapes = dict(stub.output_shape(), res6=ShapeSpec(channels=24, stride=64))
    before = SEBackboneHook(input_shapes=shapes, ratio=4)
    neck = TFStyleFPN(input_shapes=shapes, in_features=["res3", "res4", "res5", "res6"],
                      out_channels=8, num_top_levels=0)
    after = FusionBackboneHook(input_shapes=neck.output_shape(), out_channels=16)
    backbone = HookedBackbone(bottom_up=stub, neck=neck, extra_levels=extra,
                              before_hook=before, after_hook=after)
    assert list(backbone.output_shape()) == ["p3", "p4", "p5", "p6", "f3"]
    assert backbone.output_shape()["f3"] == ShapeSpec(channels=16, stride=8)
    assert backbone.size_divisibility == 64  # the neck's (largest stride) beats the stub's 16
    out = backbone(torch.randn(2, 3, IMAGE, IMAGE))
    _check(backbone, out)
    sum(o.sum() for o in out.values()).backward()
    unused = "bottom_up.mix.res2"  # res2 feeds nothing here
    assert all(p.grad is not None for n, p in backbone.named_parameters() if unused not in n)


def test_rpn_hook_gives_two_dicts_and_leaves_roi_features_unhooked():
    stub = StubBottomUp()
    neck = TFStyleFPN(input_shapes=stub.output_shape(), in_features=["res3", "res4", "res5"],
                      out_channels=8)
    rpn_hook = BalanceBackboneHook(input_shapes=neck.output_shape())
    backbone = HookedBackbone(bottom_up=stub, neck=neck, rpn_hook=rpn_hook)
    assert backbone.returns_two_dicts
    x = torch.randn(1, 3, IMAGE, IMAGE)
    rpn, roi = backbone(x)
    _check(backbone, rpn)
    _check(backbone, roi)
    plain = neck(stub(x))
    assert all(torch.equal(roi[k], plain[k]) for k in plain)
    hooked = rpn_hook(plain)
    assert all(torch.allclose(rpn[k], hooked[k]) for k in plain)


def test_balance_v2_after_hook_receives_bottom_up_and_doubles_channels():
    stub = StubBottomUp()
    neck = TFStyleFPN(input_shapes=stub.output_shape(), in_features=["res3", "res4", "res5"],
                      out_channels=8)
    after = BalanceBackboneHook(input_shapes=neck.output_shape(), concat_bottom_up=True,
                                bottom_up_shapes=stub.output_shape())
    backbone = HookedBackbone(bottom_up=stub, neck=neck, after_hook=after)
    assert {s.channels for s in backbone.output_shape().values()} == {16}
    _check(backbone, backbone(torch.randn(1, 3, IMAGE, IMAGE)))


def test_two_way_neck_routes_its_pair():
    stub = StubBottomUp()
    args = dict(input_shapes=stub.output_shape(), in_features=["res3", "res4", "res5"],
                out_channels=8)
    neck = TwoWayFPN(rpn_fpn=TFStyleFPN(**args), roi_fpn=TFStyleFPN(**args))
    backbone = HookedBackbone(bottom_up=stub, neck=neck)
    x = torch.randn(1, 3, IMAGE, IMAGE)
    rpn, roi = backbone(x)
    assert torch.equal(rpn["p3"], neck.rpn_fpn(stub(x))["p3"])
    assert torch.equal(roi["p3"], neck.roi_fpn(stub(x))["p3"])


def test_mismatched_or_misplaced_hooks_raise():
    stub = StubBottomUp()
    wrong = NonLocalBackboneHook(input_shapes={"p3": ShapeSpec(channels=8, stride=8)})
    neck = TFStyleFPN(input_shapes=stub.output_shape(), in_features=["res3", "res4", "res5"],
                      out_channels=8)
    with pytest.raises(ValueError, match="before hook was built for"):
        HookedBackbone(bottom_up=stub, neck=neck, before_hook=wrong)
    with pytest.raises(ValueError, match="needs a neck"):
        HookedBackbone(bottom_up=stub, before_hook=SEBackboneHook(input_shapes=stub.output_shape()))
    args = dict(input_shapes=stub.output_shape(), in_features=["res3", "res4", "res5"],
                out_channels=8)
    two_way = TwoWayFPN(rpn_fpn=TFStyleFPN(**args), roi_fpn=TFStyleFPN(**args))
    with pytest.raises(ValueError, match="two-way neck takes no after hook"):
        HookedBackbone(bottom_up=stub, neck=two_way,
                       after_hook=SEBackboneHook(input_shapes=two_way.output_shape()))
    v2 = BalanceBackboneHook(input_shapes=neck.output_shape(), concat_bottom_up=True,
                             bottom_up_shapes=stub.output_shape())
    with pytest.raises(ValueError, match="RPN and ROI features must have the same shapes"):
        HookedBackbone(bottom_up=stub, neck=neck, rpn_hook=v2)


def _narrow_cfg(sephnet_cfg, backbone_name):
    cfg = sephnet_cfg(narrow_r50=8)  # res5: 256 channels; 16 FPN channels below
    cfg.MODEL.BACKBONE.NAME = backbone_name
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    return cfg


def test_hooked_detectron2_fpn_builder_wraps_the_seph_fpn_with_after_and_rpn_hooks(sephnet_cfg):
    cfg = _narrow_cfg(sephnet_cfg, "build_seph_hooked_fpn_backbone")
    cfg.MODEL.SEPH.BACKBONE_HOOKS.AFTER = "FusionBackboneHook"
    validate_sephnet_config(cfg)
    backbone = build_backbone(cfg)
    assert type(backbone.bottom_up).__name__ == "FPN" and backbone.neck is None
    assert backbone.size_divisibility == backbone.bottom_up.size_divisibility == 32
    assert list(backbone.output_shape()) == ["p3", "p4", "p5", "p6", "f3"]
    _check(backbone, backbone(torch.randn(1, 3, IMAGE, IMAGE)))
    cfg.MODEL.SEPH.BACKBONE_HOOKS.BEFORE = "SEBackboneHook"
    with pytest.raises(ValueError, match="BEFORE='SEBackboneHook'"):
        validate_sephnet_config(cfg)
    with pytest.raises(ValueError, match="BEFORE='SEBackboneHook'"):
        build_backbone(cfg)


_BUILDER_KEYS = {
    "build_seph_hooked_fpn_backbone": {},
    "build_seph_tf_fpn_backbone": {"MODEL.SEPH.BACKBONE_HOOKS.BEFORE": "NonLocalBackboneHook"},
    "build_seph_bifpn_backbone": {
        "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
        "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
        "MODEL.SEPH.NECKS.BIFPN.SIZE_DIVISIBILITY": 64,
        "MODEL.SEPH.BACKBONE_HOOKS.BEFORE": "SEBackboneHook",
    },
    "build_seph_two_way_fpn_backbone": {
        "MODEL.META_ARCHITECTURE": "SephGeneralizedRCNN",
        "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
        "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
        "MODEL.SEPH.NECKS.TF_FPN.NUM_TOP_LEVELS": 0,
    },
    "build_seph_pafpn_backbone": {"MODEL.SEPH.BACKBONE_HOOKS.BEFORE": "SPPBackboneHook"},
    "build_seph_asff_backbone": {
        "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
        "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
    },
    "build_seph_nas_fpn_backbone": {  # 5 levels up to stride 64 (the 64 px test image)
        "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
        "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5", "res6"],
        "MODEL.SEPH.NAS_FPN.NUM_STACKS": 2,
    },
}


def test_builder_table_covers_every_hooked_builder():
    from sephnet.config.backbone_hooks import HOOKED_BACKBONES

    assert sorted(_BUILDER_KEYS) == sorted(HOOKED_BACKBONES)


@pytest.mark.parametrize("builder", sorted(_BUILDER_KEYS))
def test_every_hooked_builder_builds_from_config_and_backpropagates(builder, sephnet_cfg):
    cfg = _narrow_cfg(sephnet_cfg, builder)
    cfg.MODEL.SEPH.BACKBONE_HOOKS.AFTER = "" if "two_way" in builder else "BalanceBackboneHook"
    for key, value in _BUILDER_KEYS[builder].items():
        cfg.merge_from_list([key, value])
    validate_sephnet_config(cfg)
    backbone = build_backbone(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = backbone(torch.randn(1, 3, IMAGE, IMAGE))
    finally:
        torch.set_num_threads(threads)
    dicts = out if backbone.returns_two_dicts else (out,)
    for d in dicts:
        _check(backbone, d)
    sum(t.sum() for d in dicts for t in d.values()).backward()
    assert all(p.grad is not None for n, p in backbone.named_parameters()
               if not n.startswith("bottom_up"))
