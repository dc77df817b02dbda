"""The clutter dataset: determinism, masks that agree with boxes and areas, occlusion, its
statistics, and lazy registration."""
import hashlib
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from sephnet.backend import DatasetCatalog, MetadataCatalog
from sephnet.data import clutter
from sephnet.data.clutter import CLUTTER_CLASSES, ClutterParams, generate_clutter
from sephnet.data.statistics import dataset_statistics

SMALL = ClutterParams(num_train=8, num_val=2)


def _hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    generate_clutter(str(tmp_path / "a"), SMALL)
    generate_clutter(str(tmp_path / "b"), SMALL)
    a, b = _hashes(str(tmp_path / "a")), _hashes(str(tmp_path / "b"))
    assert len(a) == 8 + 2 + 2 + 1 and a == b
    generate_clutter(str(tmp_path / "c"), ClutterParams(num_train=8, num_val=2, seed=1))
    c = _hashes(str(tmp_path / "c"))
    assert c["train/000001.png"] != a["train/000001.png"]
    assert c["annotations/instances_train.json"] != a["annotations/instances_train.json"]


def test_masks_match_boxes_areas_and_are_disjoint(tmp_path):
    params = ClutterParams(num_train=16, num_val=1)
    generate_clutter(str(tmp_path), params)
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        coco = json.load(f)
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == list(CLUTTER_CLASSES)
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for info in coco["images"]:
        h, w = info["height"], info["width"]
        assert (h, w) in params.image_sizes
        assert cv2.imread(str(tmp_path / "train" / info["file_name"])).shape == (h, w, 3)
        anns = by_image[info["id"]]
        assert 1 <= len(anns) <= params.max_objects
        union = np.zeros((h, w), bool)
        for ann in anns:
            assert ann["segmentation"]["size"] == [h, w] and ann["iscrowd"] == 0
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            ys, xs = np.nonzero(mask)
            # the box is the mask's tight box in pixel-edge XYWH, the area its pixel count
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert ann["area"] == mask.sum() >= 12
            assert not (union & mask).any()  # visible parts never share pixels
            union |= mask


def test_occluded_objects_keep_the_visible_fraction(tmp_path):
    # Objects are painted back to front; an annotation is the visible part of its object,
    # which keeps >= min_visible of the object's own area. The last object is whole, so
    # its mask equals the full polygon; earlier ones can only lose pixels.
    params = ClutterParams(num_train=0, num_val=6, min_objects=8, max_objects=8)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, 1, 0])))
    _, objects = clutter._draw_image(rng, params)
    assert len(objects) >= 4
    occluded = 0
    for k, (_, visible) in enumerate(objects):
        later = np.zeros_like(visible)
        for _, mask in objects[k + 1:]:
            later |= mask
        assert not (visible & later).any()
        occluded += int(visible.sum() > 0 and later.any())
    assert occluded >= 1


def test_generated_set_has_small_objects_every_class_and_varied_counts(tmp_path):
    generate_clutter(str(tmp_path), ClutterParams(num_train=30, num_val=1))
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        stats = dataset_statistics(json.load(f))
    assert set(stats["per_class"]) == set(CLUTTER_CLASSES)
    assert 0.2 < stats["small_fraction"] < 0.8
    assert stats["area_histogram"]["1024-4096"] > 0  # medium objects too
    assert stats["objects_per_image"]["max"] - stats["objects_per_image"]["min"] >= 3
    assert stats["box_aspect"]["p5"] < 0.8 and stats["box_aspect"]["p95"] > 1.25


def test_default_root_follows_environment(monkeypatch):
    monkeypatch.setenv("SEPHNET_CLUTTER_DIR", "/x/clutter_here")
    assert clutter.default_clutter_root() == "/x/clutter_here"
    monkeypatch.delenv("SEPHNET_CLUTTER_DIR")
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data")
    assert clutter.default_clutter_root() == os.path.join("/data", "clutter")


def test_lazy_registration_generates_once_on_first_get(tmp_path, monkeypatch):
    import sephnet.data  # noqa: F401

    names = ("clutter_train", "clutter_val")
    assert all(n in DatasetCatalog.list() for n in names)
    saved = {n: (DatasetCatalog.pop(n), MetadataCatalog.pop(n)) for n in names}
    try:
        root = str(tmp_path / "lazy")
        clutter.register_clutter(root, SMALL)
        assert not os.path.exists(root)  # registration alone generates nothing
        dicts = DatasetCatalog.get("clutter_val")
        assert len(dicts) == 2 and dicts[0]["file_name"] == os.path.join(root, "val", "000001.png")
        assert all(0 <= a["category_id"] <= 7 for d in dicts for a in d["annotations"])
        meta = MetadataCatalog.get("clutter_val")
        assert meta.thing_classes == list(CLUTTER_CLASSES) and meta.evaluator_type == "coco"
        calls = []
        monkeypatch.setattr(clutter, "generate_clutter", lambda *a: calls.append(a))
        DatasetCatalog.get("clutter_train")
        assert calls == []  # up to date: not generated again
        assert sorted(os.listdir(str(tmp_path))) == ["lazy", "lazy.lock"]  # no temp folders
    finally:
        for name, (func, meta) in saved.items():
            DatasetCatalog.pop(name, None)
            DatasetCatalog.register(name, func)
            MetadataCatalog[name] = meta
