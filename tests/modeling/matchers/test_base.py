"""The anchor-matcher builder and the shared statistics helper."""
import statistics

import pytest
import torch

from sephnet.modeling.matchers import ATSSMatcher, IoUStatisticsMatcher, build_anchor_matcher
from sephnet.modeling.matchers.base import masked_mean_std
from sephnet.modeling.registry import SEPH_ANCHOR_MATCHER_REGISTRY


def _cfg(sephnet_cfg, name):
    cfg = sephnet_cfg()
    cfg.MODEL.SEPH.RPN.MATCHER.NAME = name
    cfg.MODEL.RPN.IOU_THRESHOLDS = [0.4, 0.5]
    return cfg


def test_every_log_matcher_is_registered():
    names = {name for name, _ in SEPH_ANCHOR_MATCHER_REGISTRY}
    log_names = {
        "ATSSMatcher", "ATSSMatcherPreFix", "ATSSMatcher3", "ATSSMatcher4", "DynamicMatcher"
    }
    assert log_names <= names


def test_atss_topk_is_nine_per_cell_anchor(sephnet_cfg):
    matcher = build_anchor_matcher(_cfg(sephnet_cfg, "ATSSMatcher"), num_cell_anchors=3)
    assert isinstance(matcher, ATSSMatcher)
    assert (matcher.topk, matcher.min_iou, matcher.pre_fix) == (27, 0.1, False)
    assert build_anchor_matcher(_cfg(sephnet_cfg, "ATSSMatcher"), num_cell_anchors=1).topk == 9
    assert build_anchor_matcher(_cfg(sephnet_cfg, "ATSSMatcherPreFix"), num_cell_anchors=3).pre_fix


@pytest.mark.parametrize(
    "name,ignore_band,level_weighted",
    [
        ("ATSSMatcher3", True, False),
        ("ATSSMatcher4", False, False),
        ("DynamicMatcher", False, True),
    ],
)
def test_presets_set_only_their_distinguishing_options(name, ignore_band, level_weighted, sephnet_cfg):
    matcher = build_anchor_matcher(_cfg(sephnet_cfg, name), num_cell_anchors=3)
    assert isinstance(matcher, IoUStatisticsMatcher)
    assert (matcher.low, matcher.high, matcher.min_iou) == (0.4, 0.5, 0.1)
    assert (matcher.ignore_band, matcher.level_weighted) == (ignore_band, level_weighted)


def test_unknown_or_empty_name_raises_value_error(sephnet_cfg):
    with pytest.raises(ValueError, match="ATSSMatcher3"):  # the message lists valid names
        build_anchor_matcher(_cfg(sephnet_cfg, "ATTSMatcher"), num_cell_anchors=3)
    with pytest.raises(ValueError, match="MODEL.SEPH.RPN.MATCHER.NAME"):
        build_anchor_matcher(_cfg(sephnet_cfg, ""), num_cell_anchors=3)


def test_masked_mean_std_matches_population_statistics():
    values = torch.tensor([[0.2, 0.5, 0.9, 0.05], [0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    mean, std, has_any = masked_mean_std(values, mask)
    assert mean[0].item() == pytest.approx(statistics.fmean([0.2, 0.5, 0.9]))
    assert std[0].item() == pytest.approx(statistics.pstdev([0.2, 0.5, 0.9]))
    assert (mean[1].item(), std[1].item()) == (pytest.approx(0.3), 0.0)
    assert (mean[2].item(), std[2].item()) == (0.0, 0.0)
    assert has_any.tolist() == [True, True, False]
    # Weights 1, 1, 2 equal repeating the third value.
    mean_w, std_w, _ = masked_mean_std(values, mask, torch.tensor([1.0, 1.0, 2.0, 1.0]))
    assert mean_w[0].item() == pytest.approx(statistics.fmean([0.2, 0.5, 0.9, 0.9]))
    assert std_w[0].item() == pytest.approx(statistics.pstdev([0.2, 0.5, 0.9, 0.9]))
