"""What the generated datasets (shapes, clutter) share through sephnet.data.generated_dataset
and sephnet.data.synthetic: determinism by seed, masks that agree with boxes and areas,
atomic lazy generation, the root's environment variables, and registration. The checks
specific to one dataset are in test_shapes.py and test_clutter.py."""
import hashlib
import json
import os
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Iterator, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from sephnet.backend import DatasetCatalog, MetadataCatalog
from sephnet.data import clutter, shapes  # importing sephnet.data registers both datasets


@dataclass(frozen=True)
class Generated:
    """One generated dataset: its module's functions go by ``<verb>_<name>``."""
    name: str
    module: ModuleType
    classes: Tuple[str, ...]
    small: object  # the module's params dataclass, a few images per split
    env_var: str
    # max |box edge - mask edge| in px: shapes stores the polygon its mask is drawn from
    # (its box is exact for the rasterized mask, which the polygon decodes to within 1 px)
    box_tolerance: int

    def call(self, verb: str, *args):
        return getattr(self.module, f"{verb}_{self.name}")(*args)


SHAPES = Generated("shapes", shapes, shapes.SHAPES_CLASSES,
                   shapes.ShapesParams(num_train=6, num_val=2), "SEPHNET_SHAPES_DIR", 1)
CLUTTER = Generated("clutter", clutter, clutter.CLUTTER_CLASSES,
                    clutter.ClutterParams(num_train=8, num_val=2), "SEPHNET_CLUTTER_DIR", 0)
DATASETS = pytest.mark.parametrize("ds", [SHAPES, CLUTTER], ids=lambda d: d.name)


def _hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def decoded_instances(root: str, split: str = "train"
                      ) -> Iterator[Tuple[dict, np.ndarray, List[Tuple[dict, np.ndarray]]]]:
    """``(image info, BGR image, [(annotation, (H, W) bool mask)])`` of each image of a
    generated split, the mask decoded from the annotation's polygon or RLE."""
    with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
        coco = json.load(f)
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for info in coco["images"]:
        h, w = info["height"], info["width"]
        image = cv2.imread(os.path.join(root, split, info["file_name"]))
        anns = []
        for ann in by_image.get(info["id"], []):
            seg = ann["segmentation"]
            rle = seg if isinstance(seg, dict) else mask_util.merge(
                mask_util.frPyObjects(seg, h, w))
            anns.append((ann, mask_util.decode(rle).astype(bool)))
        yield info, image, anns


@DATASETS
def test_same_seed_gives_identical_files_and_another_seed_does_not(ds, tmp_path):
    ds.call("generate", str(tmp_path / "a"), ds.small)
    ds.call("generate", str(tmp_path / "b"), ds.small)
    a, b = _hashes(str(tmp_path / "a")), _hashes(str(tmp_path / "b"))
    # images, two annotation files, generator.json
    assert len(a) == ds.small.num_train + ds.small.num_val + 2 + 1 and a == b
    ds.call("generate", str(tmp_path / "c"), replace(ds.small, seed=1))
    c = _hashes(str(tmp_path / "c"))
    assert c["train/000001.png"] != a["train/000001.png"]
    assert c["annotations/instances_train.json"] != a["annotations/instances_train.json"]


@DATASETS
def test_masks_match_boxes_areas_and_are_disjoint(ds, tmp_path):
    params = replace(ds.small, num_train=16, num_val=1)
    ds.call("generate", str(tmp_path), params)
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        categories = json.load(f)["categories"]
    assert [c["name"] for c in sorted(categories, key=lambda c: c["id"])] == list(ds.classes)
    images = 0
    for info, image, anns in decoded_instances(str(tmp_path)):
        images += 1
        h, w = info["height"], info["width"]
        assert (h, w) in params.image_sizes and image.shape == (h, w, 3)
        assert 1 <= len(anns) <= params.max_objects
        union = np.zeros((h, w), bool)
        for ann, mask in anns:
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= len(ds.classes)
            ys, xs = np.nonzero(mask)
            # the box is the mask's tight box in pixel-edge XYWH, the area its pixel count
            x0, y0, bw, bh = ann["bbox"]
            edges = np.array([x0, y0, x0 + bw, y0 + bh])
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(edges - tight).max() <= ds.box_tolerance
            assert ann["area"] == mask.sum()
            assert not (union & mask).any()  # instances (visible parts) never share pixels
            union |= mask
    assert images == 16


@DATASETS
def test_ensure_generates_once_and_regenerates_on_version_change(ds, tmp_path, monkeypatch):
    root = str(tmp_path / ds.name)
    assert ds.call("ensure", root, ds.small) == root
    before = _hashes(root)
    calls = []
    monkeypatch.setattr(ds.module, f"generate_{ds.name}", lambda *a: calls.append(a))
    ds.call("ensure", root, ds.small)
    assert calls == []  # up to date: nothing generated
    monkeypatch.undo()
    with open(os.path.join(root, "generator.json"), "w") as f:
        json.dump({"version": -1, "params": ds.small.as_json()}, f)
    ds.call("ensure", root, ds.small)
    assert _hashes(root) == before
    # no temporary or stale folders
    assert sorted(os.listdir(str(tmp_path))) == [ds.name, f"{ds.name}.lock"]


@DATASETS
def test_interrupted_generation_leaves_nothing(ds, tmp_path, monkeypatch):
    def crash(out_dir, params):
        os.makedirs(os.path.join(out_dir, "train"))
        raise KeyboardInterrupt

    monkeypatch.setattr(ds.module, f"generate_{ds.name}", crash)
    with pytest.raises(KeyboardInterrupt):
        ds.call("ensure", str(tmp_path / ds.name), ds.small)
    assert os.listdir(str(tmp_path)) == [f"{ds.name}.lock"]  # no partial dataset


@DATASETS
def test_default_root_follows_environment(ds, monkeypatch):
    default_root = getattr(ds.module, f"default_{ds.name}_root")
    monkeypatch.setenv(ds.env_var, "/x/here")
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data")
    assert default_root() == "/x/here"
    monkeypatch.delenv(ds.env_var)
    assert default_root() == os.path.join("/data", ds.name)
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert default_root() == os.path.join("datasets", ds.name)


@DATASETS
def test_import_registers_both_splits(ds):
    for split in ("train", "val"):
        name = f"{ds.name}_{split}"
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(ds.classes)
        assert meta.evaluator_type == "coco"
        assert meta.json_file.endswith(f"instances_{split}.json")


@DATASETS
def test_lazy_registration_generates_once_on_first_get(ds, tmp_path, monkeypatch):
    names = (f"{ds.name}_train", f"{ds.name}_val")
    saved = {n: (DatasetCatalog.pop(n), MetadataCatalog.pop(n)) for n in names}
    try:
        root = str(tmp_path / "lazy")
        ds.call("register", root, ds.small)
        assert not os.path.exists(root)  # registration alone generates nothing
        dicts = DatasetCatalog.get(names[1])
        assert len(dicts) == ds.small.num_val and os.path.isdir(root)
        assert dicts[0]["file_name"] == os.path.join(root, "val", "000001.png")
        assert all(0 <= a["category_id"] < len(ds.classes) for d in dicts for a in d["annotations"])
        meta = MetadataCatalog.get(names[1])
        assert meta.thing_classes == list(ds.classes) and meta.evaluator_type == "coco"
        assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(len(ds.classes))}
        calls = []
        monkeypatch.setattr(ds.module, f"generate_{ds.name}", lambda *a: calls.append(a))
        assert len(DatasetCatalog.get(names[0])) == ds.small.num_train
        assert calls == []  # up to date: not generated again
        assert sorted(os.listdir(str(tmp_path))) == ["lazy", "lazy.lock"]  # no temp folders
        ds.call("register", root, ds.small)  # idempotent
    finally:
        for name, (func, meta) in saved.items():
            DatasetCatalog.pop(name, None)
            DatasetCatalog.register(name, func)
            MetadataCatalog[name] = meta
