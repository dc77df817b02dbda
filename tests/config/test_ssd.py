"""MODEL.SEPH.SSD and MODEL.SEPH.VGG: defaults, and the errors raised at setup."""
import os

import pytest

from sephnet.backend import get_cfg
from sephnet.config import add_sephnet_config, validate_sephnet_config

REPO = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
SSD = {
    "MODEL.META_ARCHITECTURE": "SephSSD",
    "MODEL.BACKBONE.NAME": "build_seph_ssd_backbone",
    "MODEL.MASK_ON": "False",
}


def test_defaults_are_ssd300s_and_validate(sephnet_cfg):
    cfg = sephnet_cfg(SSD, validate=True)
    ssd = cfg.MODEL.SEPH.SSD
    assert ssd.INPUT_SIZE == 300 and len(ssd.PRIOR_MIN_SIZES) == 2 + len(ssd.EXTRA_CHANNELS)
    assert tuple(ssd.BBOX_REG_WEIGHTS) == (10.0, 10.0, 5.0, 5.0)


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"MODEL.SEPH.SSD.NEG_POS_RATIO": "2.0"}, "MODEL.SEPH.SSD.NEG_POS_RATIO set, but only"),
        ({"MODEL.SEPH.SSD.AUGMENT.EXPAND_PROB": "0.2"}, "AUGMENT.ENABLED is False"),
        ({"MODEL.SEPH.VGG.FC_WIDTH": "16"}, "MODEL.SEPH.VGG.FC_WIDTH set, but the VGG16 base is not used"),
    ],
)
def test_keys_of_unselected_components_are_refused(sephnet_cfg, keys, match):
    with pytest.raises(ValueError, match=match):
        sephnet_cfg(keys, validate=True)


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"MODEL.MASK_ON": "True"}, "MODEL.MASK_ON=True: SephSSD detects boxes only"),
        ({"MODEL.SEPH.SSD.PRIOR_STRIDES": "[8.0]"}, "one entry per feature map"),
        ({"MODEL.SEPH.SSD.EXTRA_STRIDES": "[2, 2, 1]"}, "one entry per extra layer"),
        ({"MODEL.SEPH.SSD.PRIOR_MAX_SIZES": "[45.0, 99.0, 153.0, 207.0, 261.0, 260.0]"}, "PRIOR_MAX_SIZES"),
        ({"MODEL.SEPH.SSD.PRIOR_ASPECT_RATIOS": "[[2.0], [1.0], [2.0], [2.0], [2.0], [2.0]]"}, "!= 1"),
        ({"MODEL.SEPH.SSD.IOU_THRESHOLD": "0.0"}, "IOU_THRESHOLD"),
        ({"MODEL.SEPH.SSD.BBOX_REG_WEIGHTS": "(10.0, 10.0, 5.0)"}, "BBOX_REG_WEIGHTS"),
        ({"MODEL.SEPH.SSD.TOPK_CANDIDATES_TEST": "0"}, "TOPK_CANDIDATES_TEST=0"),
        ({"MODEL.SEPH.SSD.EXTRA_NORM": "XN"}, "EXTRA_NORM='XN'"),
        ({"MODEL.SEPH.VGG.WIDTHS": "[64, 128]"}, "5 ints"),
        ({"MODEL.SEPH.SSD.BASE_BACKBONE": "build_resnet_backbone"}, "build_resnet_backbone gives 1 feature maps and EXTRA_CHANNELS adds 4"),
    ],
)
def test_bad_ssd_settings_are_refused(sephnet_cfg, keys, match):
    with pytest.raises(ValueError, match=match):
        sephnet_cfg({**SSD, **keys}, validate=True)


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"MODEL.SEPH.AUGMENT.MIXUP.PROB": "0.5"}, "MIXUP.PROB > 0 with MODEL.SEPH.SSD.AUGMENT.ENABLED"),
        ({"INPUT.CROP.ENABLED": "True"}, "INPUT.CROP.ENABLED=True"),
        ({"MODEL.SEPH.SSD.AUGMENT.CROP_MIN_SIZE": "0.0"}, "CROP_MIN_SIZE"),
        ({"MODEL.SEPH.SSD.AUGMENT.EXPAND_MAX_RATIO": "0.5"}, "EXPAND_MAX_RATIO"),
    ],
)
def test_bad_augmentation_settings_are_refused(sephnet_cfg, keys, match):
    base = {**SSD, "MODEL.SEPH.SSD.AUGMENT.ENABLED": "True"}
    with pytest.raises(ValueError, match=match):
        sephnet_cfg({**base, **keys}, validate=True)


def test_augmentation_alone_may_set_the_input_size(sephnet_cfg):
    cfg = sephnet_cfg(
        {"MODEL.MASK_ON": "False", "MODEL.SEPH.SSD.AUGMENT.ENABLED": "True", "MODEL.SEPH.SSD.INPUT_SIZE": "512"},
        validate=True,
    )
    assert cfg.MODEL.SEPH.SSD.INPUT_SIZE == 512


@pytest.mark.parametrize(
    "name, levels",
    [("detectors/ssd300_vgg16_coco.yaml", 6), ("detectors/ssd512_vgg16_coco.yaml", 7), ("shapes/ssd_R_18_shapes.yaml", 5)],
)
def test_configs_state_one_prior_entry_per_feature_map(name, levels):
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", name))
    validate_sephnet_config(cfg)
    assert len(cfg.MODEL.SEPH.SSD.PRIOR_MIN_SIZES) == levels
