"""The training data loader of ``train_net.py`` and the tools: detectron2's, with
``MODEL.SEPH.AUGMENT`` augmentations and ``MODEL.SEPH.STITCH`` batch stitching when on."""
import numpy as np

from sephnet.backend import CfgNode
from sephnet.backend import data as d2_data
from sephnet.config.augment import any_enabled

from .augmented_mapper import AugmentedDatasetMapper
from .ssd_mapper import SSDDatasetMapper
from .stitch import stitch_batches

__all__ = ["build_train_loader"]


def build_train_loader(cfg: CfgNode):
    """:func:`build_augmented_loader`, with the original's batch stitching on top
    (:func:`sephnet.data.stitch.stitch_batches`) when ``MODEL.SEPH.STITCH.PROB`` > 0."""
    loader = build_augmented_loader(cfg)
    if cfg.MODEL.SEPH.STITCH.PROB <= 0:
        return loader
    seed = cfg.SEED if cfg.SEED >= 0 else None
    return stitch_batches(loader, cfg.MODEL.SEPH.STITCH.PROB, np.random.default_rng(seed))


def build_augmented_loader(cfg: CfgNode):
    """detectron2's ``build_detection_train_loader(cfg)``, unchanged when every
    ``MODEL.SEPH.AUGMENT.*.PROB`` is 0; otherwise the same loader (sampler, batching,
    aspect-ratio grouping, workers; exact resume on the core) with an
    :class:`AugmentedDatasetMapper`, which draws the extra samples of MixUp, CutMix and
    Mosaic from the same training dicts. With ``MODEL.SEPH.SSD.AUGMENT.ENABLED``, the same
    loader with SSD's pipeline instead (:class:`SSDDatasetMapper`).
    """
    if cfg.MODEL.SEPH.SSD.AUGMENT.ENABLED:
        return d2_data.build_detection_train_loader(cfg, mapper=SSDDatasetMapper(cfg))
    if not any_enabled(cfg):
        return d2_data.build_detection_train_loader(cfg)
    dicts = d2_data.get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    # the mapper's copy is serialized (compact, shared by forked workers); the loader
    # keeps the list so it can group by aspect ratio without reading images
    extra_source = d2_data.DatasetFromList(dicts, copy=False)
    mapper = AugmentedDatasetMapper(cfg, dataset=extra_source)
    return d2_data.build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)
