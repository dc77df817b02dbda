"""The synthetic shapes dataset: determinism, exact masks, atomic lazy generation, registration."""
import hashlib
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from sephnet.backend import DatasetCatalog, MetadataCatalog
from sephnet.data import shapes
from sephnet.data.shapes import SHAPES_CLASSES, ShapesParams, ensure_shapes, generate_shapes

SMALL = ShapesParams(num_train=6, num_val=2)


def _hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_same_seed_gives_identical_files(tmp_path):
    generate_shapes(str(tmp_path / "a"), SMALL)
    generate_shapes(str(tmp_path / "b"), SMALL)
    a, b = _hashes(str(tmp_path / "a")), _hashes(str(tmp_path / "b"))
    assert len(a) == 6 + 2 + 2 + 1 and a == b
    generate_shapes(str(tmp_path / "c"), ShapesParams(num_train=6, num_val=2, seed=1))
    c = _hashes(str(tmp_path / "c"))
    assert c["train/000001.png"] != a["train/000001.png"]


def test_masks_boxes_and_pixels_agree(tmp_path):
    params = ShapesParams(num_train=12, num_val=1)
    generate_shapes(str(tmp_path), params)
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        coco = json.load(f)
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == list(SHAPES_CLASSES)
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    classes = set()
    for info in coco["images"]:
        anns = by_image[info["id"]]
        assert 1 <= len(anns) <= 4
        h, w = info["height"], info["width"]
        assert (h, w) in params.image_sizes
        image = cv2.imread(str(tmp_path / "train" / info["file_name"]))
        assert image.shape == (h, w, 3)
        union = np.zeros((h, w), bool)
        for ann in anns:
            classes.add(ann["category_id"])
            poly = ann["segmentation"][0]
            assert len(poly) >= 6 and len(poly) % 2 == 0
            mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects([poly], h, w))).astype(bool)
            ys, xs = np.nonzero(mask)
            x0, y0, bw, bh = ann["bbox"]
            assert abs(x0 - xs.min()) <= 1 and abs(y0 - ys.min()) <= 1
            assert abs(x0 + bw - (xs.max() + 1)) <= 1 and abs(y0 + bh - (ys.max() + 1)) <= 1
            assert ann["area"] == mask.sum()
            assert not (union & mask).any()  # instances never share pixels
            union |= mask
            # the shape is painted flat (small noise) inside its mask
            assert image[mask].astype(float).std(axis=0).max() < 6
    assert classes == {1, 2, 3}


def test_ensure_generates_once_and_regenerates_on_version_change(tmp_path, monkeypatch):
    root = str(tmp_path / "shapes")
    assert ensure_shapes(root, SMALL) == root
    before = _hashes(root)
    calls = []
    monkeypatch.setattr(shapes, "generate_shapes", lambda *a: calls.append(a))
    ensure_shapes(root, SMALL)
    assert calls == []  # up to date: nothing generated
    monkeypatch.undo()
    with open(os.path.join(root, "generator.json"), "w") as f:
        json.dump({"version": -1, "params": SMALL.as_json()}, f)
    ensure_shapes(root, SMALL)
    assert _hashes(root) == before
    assert sorted(os.listdir(str(tmp_path))) == ["shapes", "shapes.lock"]  # no temp/stale folders


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def crash(out_dir, params):
        os.makedirs(os.path.join(out_dir, "train"))
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "generate_shapes", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(str(tmp_path / "shapes"), SMALL)
    assert os.listdir(str(tmp_path)) == ["shapes.lock"]  # no partial dataset


def test_default_root_follows_environment(monkeypatch):
    monkeypatch.setenv("SEPHNET_SHAPES_DIR", "/x/shapes_here")
    assert shapes.default_shapes_root() == "/x/shapes_here"
    monkeypatch.delenv("SEPHNET_SHAPES_DIR")
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data")
    assert shapes.default_shapes_root() == os.path.join("/data", "shapes")
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert shapes.default_shapes_root() == os.path.join("datasets", "shapes")


def test_import_registers_shapes_splits():
    import sephnet.data  # noqa: F401

    for split in ("train", "val"):
        name = f"shapes_{split}"
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["circle", "square", "triangle"]
        assert meta.evaluator_type == "coco"
        assert meta.json_file.endswith(f"instances_{split}.json")


def test_lazy_registration_generates_on_first_get(tmp_path):
    import sephnet.data  # noqa: F401

    saved = {n: (DatasetCatalog.pop(n), MetadataCatalog.pop(n)) for n in ("shapes_train", "shapes_val")}
    try:
        root = str(tmp_path / "lazy")
        shapes.register_shapes(root, SMALL)
        assert not os.path.exists(root)  # registration alone generates nothing
        dicts = DatasetCatalog.get("shapes_val")
        assert len(dicts) == 2 and os.path.isdir(root)
        assert dicts[0]["file_name"] == os.path.join(root, "val", "000001.png")
        assert all(0 <= a["category_id"] <= 2 for d in dicts for a in d["annotations"])
        assert MetadataCatalog.get("shapes_val").thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
        shapes.register_shapes(root, SMALL)  # idempotent
    finally:
        for name, (func, meta) in saved.items():
            DatasetCatalog.pop(name, None)
            DatasetCatalog.register(name, func)
            MetadataCatalog[name] = meta
