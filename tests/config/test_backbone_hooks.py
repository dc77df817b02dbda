"""MODEL.SEPH.BACKBONE_HOOKS keys: defaults, YAML merge, each setup-time error names its keys."""
import pytest

from sephnet.backend import build_backbone
from sephnet.config import validate_sephnet_config
from sephnet.config.backbone_hooks import HOOKED_BACKBONES, validate_config


def _cfg(sephnet_cfg, backbone="build_seph_tf_fpn_backbone", **keys):
    cfg = sephnet_cfg()
    cfg.MODEL.BACKBONE.NAME = backbone
    for key, value in keys.items():
        cfg.merge_from_list([f"MODEL.SEPH.BACKBONE_HOOKS.{key}", value])
    return cfg


def test_defaults_add_no_hook_and_validate_with_detectron2_backbones(sephnet_cfg):
    cfg = sephnet_cfg()
    node = cfg.MODEL.SEPH.BACKBONE_HOOKS
    assert (node.BEFORE, node.AFTER, node.RPN) == ("", "", "")
    assert (node.NORM, node.MIN_LEVEL, node.SE.RATIO) == ("EvoNormS0", 4, 16)
    assert (node.NON_LOCAL.VERSION, node.FUSION.VERSION, node.BALANCE.VERSION) == (
        "current", "V1", "V1")
    validate_sephnet_config(cfg)


def test_keys_merge_from_yaml_text(tmp_path, sephnet_cfg):
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "MODEL:\n  BACKBONE:\n    NAME: build_seph_tf_fpn_backbone\n  SEPH:\n    BACKBONE_HOOKS:\n"
        "      BEFORE: NonLocalBackboneHook\n      AFTER: FusionBackboneHook\n"
        "      NON_LOCAL:\n        VERSION: old\n      FUSION:\n        VERSION: V2\n"
    )
    cfg = _cfg(sephnet_cfg)
    cfg.merge_from_file(str(path))
    validate_config(cfg)
    assert cfg.MODEL.SEPH.BACKBONE_HOOKS.NON_LOCAL.VERSION == "old"
    with pytest.raises((KeyError, AssertionError), match="NONLOCAL"):  # yacs: typo-safe
        cfg.merge_from_list(["MODEL.SEPH.BACKBONE_HOOKS.NONLOCAL", "x"])


@pytest.mark.parametrize("backbone", [b for b in HOOKED_BACKBONES if b != "build_seph_two_way_fpn_backbone"])
def test_every_hooked_builder_accepts_after_hooks(backbone, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, backbone, AFTER="SEBackboneHook")
    validate_config(cfg)
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 64, "MODEL.RESNETS.OUT_FEATURES", ["res3", "res4", "res5"],
                         "MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"]])
    if backbone == "build_seph_nas_fpn_backbone":  # takes exactly 5 levels: add res6, res7
        cfg.merge_from_list(["MODEL.SEPH.NECKS.EXTRA_LEVELS", 2, "MODEL.SEPH.NECKS.EXTRA_LEVEL_CHANNELS", 64,
                             "MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5", "res6", "res7"]])
    built = build_backbone(cfg)  # a narrow ResNet-18 under the validated hooks
    hooks = {name: type(m).__name__ for name, m in built.named_children() if name.endswith("hook")}
    assert "SEBackboneHook" in hooks.values(), hooks


@pytest.mark.parametrize(
    "keys,backbone,message",
    [
        ({"BEFORE": "Nope"}, None, "BEFORE='Nope' is not registered.*NonLocalBackboneHook"),
        ({"AFTER": "SEBackboneHook"}, "build_resnet_fpn_backbone",
         "AFTER='SEBackboneHook' needs a hooked backbone builder.*'build_resnet_fpn_backbone'"),
        ({"AFTER": "SEBackboneHook"}, "build_seph_two_way_fpn_backbone",
         "AFTER='SEBackboneHook' cannot follow the two-way FPN"),
        ({"BEFORE": "SEBackboneHook"}, "build_seph_hooked_fpn_backbone",
         "BEFORE='SEBackboneHook' cannot wrap detectron2's FPN"),
        ({"RPN": "BalanceBackboneHook"}, None, "RPN='BalanceBackboneHook'.*SephGeneralizedRCNN"),
        ({"NORM": "XN"}, None, "MODEL.SEPH.BACKBONE_HOOKS.NORM.*'XN'"),
        ({"NON_LOCAL.VERSION": "V3"}, None, "NON_LOCAL.VERSION='V3'"),
        ({"FUSION.VERSION": "V4"}, None, "FUSION.VERSION='V4'"),
        ({"BALANCE.VERSION": "V3"}, None, "BALANCE.VERSION='V3'"),
        ({"MIN_LEVEL": 1}, None, "MIN_LEVEL=1; expected an int >= 2"),
        ({"SE.RATIO": 0}, None, "SE.RATIO=0"),
        ({"BALANCE.REFERENCE_INDEX": -1}, None, "REFERENCE_INDEX=-1"),
    ],
)
def test_setup_errors_name_keys_and_values(keys, backbone, message, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, backbone or "build_seph_tf_fpn_backbone", **keys)
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


def test_rpn_balance_v2_is_rejected_as_it_would_change_rpn_channels(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, RPN="BalanceBackboneHook", **{"BALANCE.VERSION": "V2"})
    cfg.MODEL.META_ARCHITECTURE = "SephGeneralizedRCNN"
    with pytest.raises(ValueError, match="VERSION='V2'.*twice the channels"):
        validate_config(cfg)
