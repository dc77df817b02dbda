"""MODEL.SEPH.NECKS keys and the reused MODEL.FPN keys: defaults, merge, setup-time errors."""
import pytest

from sephnet.backend import build_backbone
from sephnet.config import validate_sephnet_config
from sephnet.config.necks import validate_config


def _cfg(sephnet_cfg, backbone="build_seph_tf_fpn_backbone", **keys):
    cfg = sephnet_cfg()
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    for key, value in keys.items():
        cfg.merge_from_list([key, value])
    return cfg


def _tiny_backbone(cfg):
    """The validated config's backbone, built on a narrow ResNet-18."""
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 64])
    return build_backbone(cfg)


def test_defaults(sephnet_cfg):
    cfg = sephnet_cfg()
    node = cfg.MODEL.SEPH.NECKS
    assert (node.EXTRA_LEVELS, node.EXTRA_LEVEL_CHANNELS) == (0, 256)
    assert (node.TF_FPN.NUM_TOP_LEVELS, node.TF_FPN.MIX_FUSION_CHANNELS) == (1, 32)
    assert (node.BIFPN.NUM_CELLS, node.BIFPN.ACTIVATION.ENABLED, node.BIFPN.SIZE_DIVISIBILITY) == (
        1, False, 128)
    validate_sephnet_config(cfg)


@pytest.mark.parametrize("fuse", ["sum", "avg", "concat", "mix_fusion", "wsum"])
def test_tf_fpn_accepts_every_fuse_type(fuse, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{"MODEL.FPN.FUSE_TYPE": fuse})
    validate_config(cfg)
    backbone = _tiny_backbone(cfg)
    assert backbone.neck.fuse_type == fuse
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == {
        "p3": (64, 8), "p4": (64, 16), "p5": (64, 32), "p6": (64, 64)}


def test_two_way_with_c6_inputs_validates(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        "build_seph_two_way_fpn_backbone",
        **{"MODEL.META_ARCHITECTURE": "SephGeneralizedRCNN", "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
           "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"]},
    )
    validate_config(cfg)
    backbone = _tiny_backbone(cfg)
    assert backbone.two_way and backbone.returns_two_dicts
    assert backbone._extra_names == ["res6"]  # C6 from a strided conv on res5, fed to the FPN
    assert [(k, s.stride) for k, s in backbone.output_shape().items()] == [
        ("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64), ("p7", 128)]


@pytest.mark.parametrize(
    "backbone,keys,message",
    [
        ("build_seph_resnet_fpn_backbone", {"MODEL.FPN.FUSE_TYPE": "wsum"},
         "FUSE_TYPE='wsum' needs the TF-style FPN"),
        ("build_seph_tf_fpn_backbone", {"MODEL.FPN.FUSE_TYPE": "max"}, "FUSE_TYPE='max'"),
        ("build_seph_tf_fpn_backbone",
         {"MODEL.FPN.FUSE_TYPE": "mix_fusion", "MODEL.SEPH.NECKS.TF_FPN.MIX_FUSION_CHANNELS": 256},
         "MIX_FUSION_CHANNELS=256"),
        ("build_seph_resnet_fpn_backbone", {"MODEL.SEPH.NECKS.EXTRA_LEVELS": 1},
         "EXTRA_LEVELS=1 is read only by sephnet neck builders"),
        ("build_seph_tf_fpn_backbone", {"MODEL.FPN.IN_FEATURES": ["res4", "res5", "res6"]},
         r"IN_FEATURES=.*names \['res6'\]"),
        ("build_seph_bifpn_backbone", {"MODEL.FPN.IN_FEATURES": ["res5"]}, "BiFPN needs >= 2"),
        ("build_seph_two_way_fpn_backbone", {}, "META_ARCHITECTURE='SephGeneralizedRCNN'"),
        ("build_seph_two_way_fpn_backbone",
         {"MODEL.META_ARCHITECTURE": "SephGeneralizedRCNN",
          "MODEL.SEPH.BACKBONE_HOOKS.AFTER": "SEBackboneHook"},
         "AFTER='SEBackboneHook' is not used with"),
        ("build_seph_tf_fpn_backbone", {"MODEL.SEPH.NECKS.TF_FPN.NUM_TOP_LEVELS": -1},
         "NUM_TOP_LEVELS=-1"),
        ("build_seph_bifpn_backbone", {"MODEL.SEPH.NECKS.BIFPN.NUM_CELLS": 0}, "NUM_CELLS=0"),
    ],
)
def test_setup_errors_name_keys_and_values(backbone, keys, message, sephnet_cfg):
    with pytest.raises(ValueError, match=message):
        validate_config(_cfg(sephnet_cfg, backbone, **keys))
