"""MODEL.SEPH.AUGMENT keys: defaults off, validation errors, and the mapper built from them."""
import pytest

from sephnet.config import augment as augment_config
from sephnet.data import AugmentedDatasetMapper, CutOut, PhotometricDistortion, RandomErase


def _cfg(sephnet_cfg, pairs=()):
    cfg = sephnet_cfg()
    cfg.merge_from_list(list(pairs))
    return cfg


def test_defaults_are_off_and_valid(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    augment_config.validate_config(cfg)
    assert not augment_config.any_enabled(cfg)
    cfg = _cfg(sephnet_cfg, ["MODEL.SEPH.AUGMENT.CUTOUT.PROB", 0.5])
    assert augment_config.any_enabled(cfg)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["MODEL.SEPH.AUGMENT.MIXUP.PROB", 1.5], "MIXUP.PROB=1.5"),
        (["MODEL.SEPH.AUGMENT.MIXUP.PROB", 0.6, "MODEL.SEPH.AUGMENT.MOSAIC.PROB", 0.6], "at most 1"),
        (["MODEL.SEPH.AUGMENT.PHOTOMETRIC.CONTRAST_RANGE", [1.2, 0.8]], "CONTRAST_RANGE"),
        (["MODEL.SEPH.AUGMENT.PHOTOMETRIC.HUE_DELTA", 0.7], "HUE_DELTA"),
        (["MODEL.SEPH.AUGMENT.RANDOM_ERASE.AREA_RANGE", [0.0, 0.4]], "AREA_RANGE"),
        (["MODEL.SEPH.AUGMENT.CUTOUT.SIZE", 0], "CUTOUT.SIZE"),
        (["MODEL.SEPH.AUGMENT.CUTMIX.ALPHA", 0.0], "CUTMIX.ALPHA"),
        (["MODEL.SEPH.AUGMENT.MOSAIC.CENTER_RANGE", [0.2, 1.2]], "CENTER_RANGE"),
        (["MODEL.SEPH.AUGMENT.MOSAIC.PROB", 0.5, "MODEL.KEYPOINT_ON", True], "KEYPOINT_ON"),
        (["MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB", 0.5, "INPUT.FORMAT", "L"], "INPUT.FORMAT"),
        (["MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB", 0.5, "MODEL.LOAD_PROPOSALS", True], "LOAD_PROPOSALS"),
    ],
)
def test_bad_values_name_the_key(pairs, message, sephnet_cfg):
    with pytest.raises(ValueError, match=message):
        augment_config.validate_config(_cfg(sephnet_cfg, pairs))


def test_mapper_reads_every_key(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, [
        "MODEL.MASK_ON", True,
        "INPUT.CROP.ENABLED", True,
        "MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB", 0.5,
        "MODEL.SEPH.AUGMENT.PHOTOMETRIC.BRIGHTNESS_DELTA", 0.2,
        "MODEL.SEPH.AUGMENT.PHOTOMETRIC.CONTRAST_RANGE", [0.7, 1.3],
        "MODEL.SEPH.AUGMENT.PHOTOMETRIC.SATURATION_RANGE", [0.6, 1.4],
        "MODEL.SEPH.AUGMENT.PHOTOMETRIC.HUE_DELTA", 0.05,
        "MODEL.SEPH.AUGMENT.RANDOM_ERASE.PROB", 0.3,
        "MODEL.SEPH.AUGMENT.RANDOM_ERASE.AREA_RANGE", [0.1, 0.2],
        "MODEL.SEPH.AUGMENT.RANDOM_ERASE.ASPECT_RANGE", [0.5, 2.0],
        "MODEL.SEPH.AUGMENT.CUTOUT.PROB", 0.4,
        "MODEL.SEPH.AUGMENT.CUTOUT.NUM_HOLES", 3,
        "MODEL.SEPH.AUGMENT.CUTOUT.SIZE", 10,
        "MODEL.SEPH.AUGMENT.MIXUP.PROB", 0.2,
        "MODEL.SEPH.AUGMENT.MIXUP.ALPHA", 2.0,
        "MODEL.SEPH.AUGMENT.CUTMIX.PROB", 0.3,
        "MODEL.SEPH.AUGMENT.CUTMIX.ALPHA", 0.5,
        "MODEL.SEPH.AUGMENT.MOSAIC.PROB", 0.4,
        "MODEL.SEPH.AUGMENT.MOSAIC.CENTER_RANGE", [0.4, 0.6],
    ])
    augment_config.validate_config(cfg)
    mapper = AugmentedDatasetMapper(cfg, dataset=[{"file_name": "x.png"}])
    augs = mapper.augmentations.augs
    assert type(augs[0]).__name__ == "RandomCrop" and mapper.recompute_boxes  # INPUT.CROP first
    photometric = augs[-1]
    assert isinstance(photometric, PhotometricDistortion)
    assert (photometric.prob, photometric.brightness_delta, photometric.hue_delta) == (0.5, 0.2, 0.05)
    assert photometric.contrast_range == (0.7, 1.3) and photometric.saturation_range == (0.6, 1.4)
    erase, cutout = mapper.final_augmentations.augs
    assert isinstance(erase, RandomErase) and erase.area_range == (0.1, 0.2) and erase.aspect_range == (0.5, 2.0)
    assert isinstance(cutout, CutOut) and (cutout.prob, cutout.num_holes, cutout.size) == (0.4, 3, 10)
    assert mapper.mix_probs == (0.2, 0.3, 0.4)
    assert (mapper.mixup_alpha, mapper.cutmix_alpha, mapper.mosaic_center_range) == (2.0, 0.5, (0.4, 0.6))
