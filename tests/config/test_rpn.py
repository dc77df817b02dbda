"""MODEL.SEPH.RPN keys (anchor matchers, test-time soft-NMS): defaults, merging from YAML text, and
validation errors."""
import re

import pytest

from sephnet.backend import ShapeSpec, build_proposal_generator
from sephnet.config.rpn import validate_config


def _cfg(sephnet_cfg, name="", generator="SephRPN"):
    cfg = sephnet_cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = generator
    cfg.MODEL.SEPH.RPN.MATCHER.NAME = name
    cfg.MODEL.RPN.IOU_THRESHOLDS = [0.4, 0.5]
    return cfg


def test_defaults_keep_detectron2_matching(sephnet_cfg):
    cfg = sephnet_cfg()
    node = cfg.MODEL.SEPH.RPN.MATCHER
    assert (node.NAME, node.MIN_IOU, node.TOPK_PER_CELL_ANCHOR) == ("", 0.1, 9)
    validate_config(cfg)  # "" with the upstream RPN is valid


# name -> the matcher class it builds and the settings that tell the presets apart
MATCHERS = {
    "ATSSMatcher": ("ATSSMatcher", {"pre_fix": False}),
    "ATSSMatcherPreFix": ("ATSSMatcher", {"pre_fix": True}),
    "ATSSMatcher3": ("IoUStatisticsMatcher", {"ignore_band": True, "level_weighted": False, "low": 0.4, "high": 0.5}),
    "ATSSMatcher4": ("IoUStatisticsMatcher", {"ignore_band": False, "level_weighted": False, "low": 0.4, "high": 0.5}),
    "DynamicMatcher": ("IoUStatisticsMatcher", {"ignore_band": False, "level_weighted": True, "low": 0.4, "high": 0.5}),
}


@pytest.mark.parametrize("name", sorted(MATCHERS))
def test_every_registered_matcher_validates(name, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, name)
    validate_config(cfg)
    shapes = {f: ShapeSpec(channels=8, stride=2 ** (i + 2)) for i, f in enumerate(cfg.MODEL.RPN.IN_FEATURES)}
    rpn = build_proposal_generator(cfg, shapes)  # the validated config builds SephRPN with it
    assert type(rpn).__name__ == "SephRPN"
    cls, settings = MATCHERS[name]
    assert type(rpn.box_matcher).__name__ == cls
    assert {k: getattr(rpn.box_matcher, k) for k in settings} == settings


def test_keys_merge_from_a_config_list(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    cfg.merge_from_list(
        ["MODEL.SEPH.RPN.MATCHER.NAME", "DynamicMatcher", "MODEL.SEPH.RPN.MATCHER.MIN_IOU", 0.2]
    )
    assert cfg.MODEL.SEPH.RPN.MATCHER.NAME == "DynamicMatcher"
    assert cfg.MODEL.SEPH.RPN.MATCHER.MIN_IOU == 0.2
    with pytest.raises(AssertionError, match="MODEL.SEPH.RPN.MATCHER.TOPK"):  # yacs: typo-safe
        cfg.merge_from_list(["MODEL.SEPH.RPN.MATCHER.TOPK", 3])


def test_unknown_matcher_lists_the_registered_ones(sephnet_cfg):
    with pytest.raises(ValueError) as err:
        validate_config(_cfg(sephnet_cfg, "ATSSMatcher5"))
    message = str(err.value)
    assert "MODEL.SEPH.RPN.MATCHER.NAME='ATSSMatcher5'" in message
    assert "ATSSMatcher3" in message and "DynamicMatcher" in message


def test_matcher_needs_seph_rpn(sephnet_cfg):
    with pytest.raises(ValueError) as err:
        validate_config(_cfg(sephnet_cfg, "ATSSMatcher", generator="RPN"))
    assert "MODEL.SEPH.RPN.MATCHER.NAME" in str(err.value)
    assert "MODEL.PROPOSAL_GENERATOR.NAME" in str(err.value)


@pytest.mark.parametrize(
    "key,value", [("MIN_IOU", 1.0), ("MIN_IOU", -0.1), ("TOPK_PER_CELL_ANCHOR", 0)]
)
def test_out_of_range_values_are_rejected(key, value, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, "ATSSMatcher")
    cfg.MODEL.SEPH.RPN.MATCHER[key] = value
    with pytest.raises(ValueError, match=f"MODEL.SEPH.RPN.MATCHER.{key}"):
        validate_config(cfg)


def test_threshold_capped_matchers_need_two_sorted_rpn_iou_thresholds(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, "ATSSMatcher3")
    cfg.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.5, 0.7]
    with pytest.raises(ValueError, match="MODEL.RPN.IOU_THRESHOLDS"):
        validate_config(cfg)
    # ATSSMatcher does not use them.
    cfg.MODEL.SEPH.RPN.MATCHER.NAME = "ATSSMatcher"
    validate_config(cfg)


def test_batch_sampling_needs_seph_rpn(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, "", generator="RPN")
    assert cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED is False
    validate_config(cfg)
    cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED = True
    with pytest.raises(ValueError) as err:
        validate_config(cfg)
    assert "MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED" in str(err.value)
    assert "MODEL.PROPOSAL_GENERATOR.NAME" in str(err.value)
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "SephRPN"
    validate_config(cfg)


@pytest.mark.parametrize("key, value, message", [
    ("METHOD", "soft", "MODEL.SEPH.RPN.TEST_NMS.METHOD='soft'; expected one of"),
    ("SOFT_SIGMA", 0.0, "MODEL.SEPH.RPN.TEST_NMS.SOFT_SIGMA=0.0; expected a number > 0."),
    ("SOFT_SCORE_THRESH", 1.0,
     "MODEL.SEPH.RPN.TEST_NMS.SOFT_SCORE_THRESH=1.0; expected a number in [0, 1)."),
])
def test_test_nms_values_are_checked(sephnet_cfg, key, value, message):
    cfg = _cfg(sephnet_cfg)
    assert cfg.MODEL.SEPH.RPN.TEST_NMS.METHOD == "nms"  # default: detectron2's NMS
    cfg.MODEL.SEPH.RPN.TEST_NMS[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(cfg)


def test_soft_nms_needs_seph_rpn(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, generator="RPN")
    cfg.MODEL.SEPH.RPN.TEST_NMS.METHOD = "soft_gaussian"
    with pytest.raises(ValueError, match="METHOD='soft_gaussian' needs "
                                         "MODEL.PROPOSAL_GENERATOR.NAME='SephRPN', got 'RPN'"):
        validate_config(cfg)
