"""MODEL.SEPH.SAMPLER keys: defaults, validation errors, and building the named sampler."""
import pytest

from sephnet.config import sampler as sampler_config
from sephnet.modeling.samplers import BalancedROISampler, RandomROISampler, build_roi_sampler


def _cfg(sephnet_cfg, **sampler_keys):
    cfg = sephnet_cfg()
    for key, value in sampler_keys.items():
        cfg.MODEL.SEPH.SAMPLER[key] = value
    return cfg


def test_defaults_validate_and_build_detectron2s_uniform_sampler(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    assert cfg.MODEL.SEPH.SAMPLER.NAME == "RandomROISampler"
    sampler_config.validate_config(cfg)
    assert isinstance(build_roi_sampler(cfg), RandomROISampler)


def test_balanced_sampler_is_built_with_the_configured_switches_and_bins(sephnet_cfg):
    # sephv18_1: positives uniform, negatives balanced over 8 bins of [-0.2, 0.5].
    cfg = _cfg(sephnet_cfg, NAME="BalancedROISampler", BALANCED_POS=False, NUM_NEG_BINS=7)
    sampler_config.validate_config(cfg)
    sampler = build_roi_sampler(cfg)
    assert isinstance(sampler, BalancedROISampler)
    assert (sampler.balanced_pos, sampler.balanced_neg) == (False, True)
    assert (sampler.num_neg_bins, sampler.neg_low_iou, sampler.neg_high_iou) == (7, -0.2, 0.5)


@pytest.mark.parametrize(
    "keys,match",
    [
        (
            {"NAME": "NoSuchSampler"},
            r"MODEL.SEPH.SAMPLER.NAME='NoSuchSampler'.*"
            r"BalancedROISampler, OHEMROISampler, RandomROISampler",
        ),
        ({"NUM_NEG_BINS": 0}, r"MODEL.SEPH.SAMPLER.NUM_NEG_BINS=0"),
        ({"BALANCED_POS": 1}, r"MODEL.SEPH.SAMPLER.BALANCED_POS=1"),
        ({"NEG_LOW_IOU": 0.5, "NEG_HIGH_IOU": 0.4}, r"NEG_LOW_IOU=0.5 and .*NEG_HIGH_IOU=0.4"),
        (
            {"NEG_LOW_IOU": 0.5, "NEG_HIGH_IOU": 0.9},
            r"NEG_LOW_IOU=0.5 must be below .*IOU_THRESHOLDS=\[0.5\]",
        ),
    ],
)
def test_invalid_keys_raise_value_error_naming_key_and_value(keys, match, sephnet_cfg):
    with pytest.raises(ValueError, match=match):
        sampler_config.validate_config(_cfg(sephnet_cfg, **keys))
