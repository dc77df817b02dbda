"""build_train_loader: detectron2's loader when the augmentations are off; with MixUp,
CutMix and Mosaic on, the batches are a function of the seed and of the stream position,
so a loader resumed from a saved state (or a seek) continues exactly."""
import itertools

import numpy as np
import pytest
import torch

from sephnet.backend import BACKEND, DatasetCatalog
from sephnet.data import build_train_loader

from .test_augmented_mapper import _make_dataset

NAME = "augment_loader_test_train"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    dicts = _make_dataset(tmp_path_factory.mktemp("augment_loader"))
    DatasetCatalog.register(NAME, lambda: [dict(d) for d in dicts])
    yield NAME
    DatasetCatalog.remove(NAME)


def _cfg(sephnet_cfg, workers=0, **probs):
    cfg = sephnet_cfg()
    cfg.DATASETS.TRAIN = (NAME,)
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN = (48, 64)
    cfg.INPUT.MAX_SIZE_TRAIN = 100
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SEED = 3
    for key, value in probs.items():
        cfg.MODEL.SEPH.AUGMENT[key].PROB = value
    return cfg


def _loader(cfg):
    """The loader of a run seeded with cfg.SEED (as default_setup seeds it): the sampler's
    and the augmentations' seeds come from the seeded global RNGs."""
    np.random.seed(cfg.SEED)
    torch.manual_seed(cfg.SEED)
    return build_train_loader(cfg)


def _fingerprint(batch):
    return [
        (item["image_id"], item["image"].clone(), item["instances"].gt_boxes.tensor.clone(),
         item["instances"].gt_classes.tolist())
        for item in batch
    ]


def _differences(a, b):
    """Where two lists of batch fingerprints differ (empty: identical)."""
    if [len(x) for x in a] != [len(x) for x in b]:
        return [f"batch sizes {[len(x) for x in a]} != {[len(x) for x in b]}"]
    found = []
    for i, (batch_a, batch_b) in enumerate(zip(a, b)):
        for j, ((id_a, img_a, box_a, cls_a), (id_b, img_b, box_b, cls_b)) in enumerate(
                zip(batch_a, batch_b)):
            if id_a != id_b or cls_a != cls_b:
                found.append(f"batch {i} item {j}: image {id_a} {cls_a} vs {id_b} {cls_b}")
            elif not (torch.equal(img_a, img_b) and torch.equal(box_a, box_b)):
                found.append(f"batch {i} item {j}: pixels or boxes differ")
    return found


def _mapper_used(cfg, monkeypatch):
    """The mapper build_train_loader hands to the backend's loader builder (None: its own)."""
    from sephnet.backend import data as d2_data

    seen = {}

    def record(cfg, mapper=None, **kwargs):
        seen["mapper"] = mapper
        return "loader"

    monkeypatch.setattr(d2_data, "build_detection_train_loader", record)
    assert build_train_loader(cfg) == "loader"
    return seen["mapper"]


def test_plain_config_gets_detectron2s_loader_and_augmented_one_the_mapper(registered, monkeypatch, sephnet_cfg):
    assert _mapper_used(_cfg(sephnet_cfg), monkeypatch) is None
    mapper = _mapper_used(_cfg(sephnet_cfg, MOSAIC=1.0), monkeypatch)
    assert type(mapper).__name__ == "AugmentedDatasetMapper"
    assert len(mapper.dataset) == 4 and mapper.mix_probs == (0.0, 0.0, 1.0)


@pytest.mark.skipif(BACKEND != "core", reason="exact resume is a feature of the core's loader")
def test_resume_with_mixup_and_mosaic_is_exact(registered, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, MIXUP=0.5, MOSAIC=0.5, PHOTOMETRIC=0.5, CUTOUT=0.5)
    reference = [_fingerprint(b) for b in itertools.islice(iter(_loader(cfg)), 6)]
    assert any(len(item[3]) > 2 for batch in reference for item in batch)  # mixes happened

    first = _loader(cfg)
    stream = iter(first)
    head = [_fingerprint(next(stream)) for _ in range(3)]
    state = first.state_dict()
    resumed = _loader(cfg)
    resumed.load_state_dict(state)
    tail = [_fingerprint(b) for b in itertools.islice(iter(resumed), 3)]
    assert _differences(head + tail, reference) == []

    seeking = _loader(cfg)
    seeking.set_position(4)
    assert _differences([_fingerprint(b) for b in itertools.islice(iter(seeking), 2)], reference[4:]) == []


@pytest.mark.skipif(BACKEND != "core", reason="exact resume is a feature of the core's loader")
def test_worker_processes_give_the_same_batches(registered, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, CUTMIX=0.5, MOSAIC=0.5)
    main = [_fingerprint(b) for b in itertools.islice(iter(_loader(cfg)), 3)]
    workers = [_fingerprint(b) for b in itertools.islice(iter(_loader(_cfg(sephnet_cfg, 2, CUTMIX=0.5, MOSAIC=0.5))), 3)]
    assert len(main) == 3 and _differences(workers, main) == []
