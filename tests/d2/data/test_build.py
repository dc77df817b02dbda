"""Dataset-dict collection, train/test loaders, aspect-ratio grouping and exact resume."""
import itertools
import logging

import numpy as np
import pytest

from sephnet.d2.config import get_cfg
from sephnet.d2.data import build as build_module
from sephnet.d2.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from sephnet.d2.data.catalog import DatasetCatalog, MetadataCatalog
from sephnet.d2.data.samplers import TrainingSampler
from sephnet.d2.structures import BoxMode


def _dicts(n=12):
    """Images alternating landscape (w > h) / portrait in a 2:1 pattern, one box each."""
    out = []
    for i in range(n):
        w, h = (30, 20) if i % 3 else (20, 30)
        out.append({
            "file_name": f"{i}.jpg", "image_id": i, "width": w, "height": h,
            "annotations": [{"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYWH_ABS,
                             "category_id": i % 2, "iscrowd": 0}],
        })
    return out


def _mapper(d):
    """Cheap stand-in for DatasetMapper: keeps ids and draws from the global RNGs."""
    return {"image_id": d["image_id"], "width": d["width"], "height": d["height"],
            "r": float(np.random.rand())}


@pytest.fixture
def registered():
    names = []

    def register(name, dicts, classes=("a", "b")):
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).thing_classes = list(classes)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def test_get_dicts_concatenates_filters_and_logs_histogram(registered, caplog):
    dicts = _dicts(4)
    dicts[1]["annotations"][0]["iscrowd"] = 1  # only a crowd box: filtered
    dicts[2]["annotations"] = []  # no annotation: filtered
    a = registered("_build_a", dicts)
    b = registered("_build_b", _dicts(2))
    with caplog.at_level(logging.INFO, logger=build_module.__name__):
        out = get_detection_dataset_dicts([a, b])
    assert [d["image_id"] for d in out] == [0, 3, 0, 1]
    assert "Distribution of instances among all 2 categories" in caplog.text
    assert len(get_detection_dataset_dicts(a, filter_empty=False)) == 4


def test_get_dicts_errors_name_the_dataset(registered):
    registered("_build_known", _dicts(2))
    with pytest.raises(KeyError) as info:
        get_detection_dataset_dicts(["_build_unknown"])
    assert "_build_unknown" in str(info.value) and "_build_known" in str(info.value)
    empty = registered("_build_empty", [])
    with pytest.raises(ValueError, match="'_build_empty' is empty"):
        get_detection_dataset_dicts([empty])
    crowd_only = _dicts(1)
    crowd_only[0]["annotations"][0]["iscrowd"] = 1
    name = registered("_build_crowd", crowd_only)
    with pytest.raises(ValueError, match="No valid data found in _build_crowd"):
        get_detection_dataset_dicts(name)
    other = registered("_build_other_classes", _dicts(1), classes=("x", "y"))
    with pytest.raises(ValueError, match="thing_classes"):
        get_detection_dataset_dicts(["_build_known", other])
    with pytest.raises(ValueError):
        get_detection_dataset_dicts([])


def _loader(num_workers=0, grouping=True, batch=2, seed=7, n=12):
    loader = build_detection_train_loader(
        _dicts(n), mapper=_mapper, sampler=TrainingSampler(n, seed=seed), total_batch_size=batch,
        aspect_ratio_grouping=grouping, num_workers=num_workers,
    )
    loader.load_state_dict(dict(loader.state_dict(), augmentation_seed=123))
    return loader


def _take(loader, k):
    return [[(d["image_id"], d["r"]) for d in b] for b in itertools.islice(iter(loader), k)]


def _simulate_grouping(indices, dicts, batch):
    buckets, out = [[], []], []
    for i in indices:
        bucket = buckets[0 if dicts[i]["width"] > dicts[i]["height"] else 1]
        bucket.append(i)
        if len(bucket) == batch:
            out.append(list(bucket))
            bucket.clear()
    return out


def test_train_loader_groups_by_aspect_ratio_in_sampler_order():
    batches = _take(_loader(batch=3), 6)
    ids = [[i for i, _ in b] for b in batches]
    stream = list(itertools.islice(iter(TrainingSampler(12, seed=7)), 60))
    assert ids == _simulate_grouping(stream, _dicts(12), 3)[:6]
    for b in ids:
        assert len({_dicts()[i]["width"] > _dicts()[i]["height"] for i in b}) == 1


def test_train_loader_without_grouping_is_consecutive_chunks():
    ids = [[i for i, _ in b] for b in _take(_loader(grouping=False, batch=4), 3)]
    stream = list(itertools.islice(iter(TrainingSampler(12, seed=7)), 12))
    assert ids == [stream[0:4], stream[4:8], stream[8:12]]


def test_train_loader_is_deterministic_and_worker_count_independent():
    reference = _take(_loader(), 5)
    assert reference == _take(_loader(), 5)
    assert reference == _take(_loader(num_workers=2), 5)
    assert len({r for b in reference for _, r in b}) == 10  # per-item seeds differ


def test_mapping_does_not_disturb_the_callers_rng():
    np.random.seed(5)
    expected = np.random.rand()
    loader = _loader()
    np.random.seed(5)
    _take(loader, 2)
    assert np.random.rand() == expected


def test_state_dict_resume_continues_exactly():
    full = _take(_loader(batch=3), 8)
    first = _loader(batch=3)
    assert _take(first, 3) == full[:3]
    state = first.state_dict()
    assert state["batches"] == 3 and first.batches_consumed == 3
    resumed = _loader(batch=3, seed=999)  # seeds come back from the state
    resumed.load_state_dict(state)
    assert _take(resumed, 5) == full[3:8]
    resumed_workers = _loader(batch=3, seed=999, num_workers=2)
    resumed_workers.load_state_dict(state)
    assert _take(resumed_workers, 5) == full[3:8]


def test_set_position_seeks_without_state():
    full = _take(_loader(batch=3), 7)
    for k in (0, 1, 4):
        loader = _loader(batch=3)
        loader.set_position(k)
        assert loader.batches_consumed == k
        assert _take(loader, 7 - k) == full[k:]
    with pytest.raises(ValueError):
        _loader().set_position(-1)


def test_load_state_dict_requires_keys():
    with pytest.raises(KeyError, match="batches"):
        _loader().load_state_dict({})


def test_train_loader_batch_size_must_divide_world():
    with pytest.raises(ValueError, match="divisible"):
        build_detection_train_loader(_dicts(), mapper=_mapper, total_batch_size=0)


def test_test_loader_yields_every_item_once_in_order():
    loader = build_detection_test_loader(_dicts(5), mapper=_mapper)
    batches = list(loader)
    assert [len(b) for b in batches] == [1] * 5
    assert [b[0]["image_id"] for b in batches] == [0, 1, 2, 3, 4]


def test_loaders_from_config(registered):
    name = registered("_build_cfg", _dicts(6))
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    train = build_detection_train_loader(cfg, mapper=_mapper)
    assert train.batch_size == 2 and train.aspect_ratio_grouping
    batch = next(iter(train))
    assert len(batch) == 2
    test = build_detection_test_loader(cfg, name, mapper=_mapper)
    assert len(list(test)) == 6
    cfg.DATALOADER.SAMPLER_TRAIN = "NoSuchSampler"
    with pytest.raises(ValueError, match="NoSuchSampler"):
        build_detection_train_loader(cfg, mapper=_mapper)


def test_build_batch_data_loader_follows_the_sampler():
    from sephnet.d2.data.build import build_batch_data_loader
    from sephnet.d2.data.common import DatasetFromList, MapDataset

    dataset = MapDataset(DatasetFromList(_dicts(12), copy=False), _mapper)
    stream = list(itertools.islice(iter(TrainingSampler(12, seed=2)), 40))
    plain = build_batch_data_loader(dataset, TrainingSampler(12, seed=2), 4)
    assert [[d["image_id"] for d in b] for b in itertools.islice(iter(plain), 3)] == [
        stream[0:4], stream[4:8], stream[8:12]
    ]
    grouped = build_batch_data_loader(dataset, TrainingSampler(12, seed=2), 2, aspect_ratio_grouping=True)
    got = [[d["image_id"] for d in b] for b in itertools.islice(iter(grouped), 5)]
    assert got == _simulate_grouping(stream, _dicts(12), 2)[:5]


def test_load_proposals_into_dataset(tmp_path):
    import pickle

    from sephnet.d2.data.build import load_proposals_into_dataset

    path = str(tmp_path / "props.pkl")
    with open(path, "wb") as f:
        pickle.dump({
            "indexes": [5, 7],
            "boxes": [np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.float32), np.zeros((1, 4), np.float32)],
            "scores": [np.array([0.1, 0.9], np.float32), np.array([0.5], np.float32)],
        }, f)
    records = load_proposals_into_dataset([{"image_id": 7}, {"image_id": 5}], path)
    assert records[1]["proposal_objectness_logits"].tolist() == pytest.approx([0.9, 0.1])
    assert records[1]["proposal_boxes"][0].tolist() == [0, 0, 2, 2]
    assert records[0]["proposal_bbox_mode"] == BoxMode.XYXY_ABS
    with pytest.raises(KeyError, match="99"):
        load_proposals_into_dataset([{"image_id": 99}], path)


def test_histogram_rejects_out_of_range_category():
    from sephnet.d2.data.build import print_instances_class_histogram

    dicts = _dicts(2)
    dicts[1]["annotations"][0]["category_id"] = 2
    with pytest.raises(ValueError, match="category_id=2"):
        print_instances_class_histogram(dicts, ["a", "b"])


def test_set_position_without_sizes_maps_its_way_there():
    from sephnet.d2.data.common import DatasetFromList

    def make():
        dataset = DatasetFromList(_dicts(12), copy=False)  # a torch Dataset: sizes unknown upfront
        loader = build_detection_train_loader(
            dataset, mapper=_mapper, sampler=TrainingSampler(12, seed=7), total_batch_size=3
        )
        loader.load_state_dict(dict(loader.state_dict(), augmentation_seed=123))
        return loader

    full = _take(make(), 6)
    assert full == _take(_loader(batch=3), 6)
    loader = make()
    loader.set_position(4)
    assert loader.batches_consumed == 4 and _take(loader, 2) == full[4:6]
