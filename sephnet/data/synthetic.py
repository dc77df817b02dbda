"""What sephnet's synthetic datasets (shapes, clutter) share: the COCO-format files of their
two splits, and their registration.

A synthetic dataset is a generator ``draw(rng) -> (image, objects)`` plus a frozen params
dataclass. :func:`write_coco_splits` runs the generator once per image, each image from its
own seed (``SeedSequence([params.seed, split_index, image_index])``, so an image does not
depend on the others), and writes::

    <out_dir>/{train,val}/NNNNNN.png                 (image ids from 1, in order)
    <out_dir>/annotations/instances_{train,val}.json
    <out_dir>/generator.json                         (version + params: generated_dataset.py)

Each annotation's ``bbox`` is the tight box of its mask in pixel-edge XYWH and ``area`` its
pixel count; the generator gives the ``segmentation`` (polygons or RLE).
:func:`register_coco_splits` registers ``<name>_train`` / ``<name>_val``, generated lazily on
the first ``DatasetCatalog.get``.
"""
import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from sephnet.backend import DatasetCatalog, MetadataCatalog, load_coco_json

from .generated_dataset import write_metadata

__all__ = [
    "SPLITS",
    "SplitParams",
    "generator_metadata",
    "json_path",
    "register_coco_splits",
    "rle_segmentation",
    "write_coco_splits",
]

SPLITS = ("train", "val")

# one object of a drawn image: (contiguous class id, (H, W) bool mask, COCO segmentation)
DrawnObject = Tuple[int, np.ndarray, Any]


class SplitParams:
    """Mixin for a generator's frozen params dataclass with ``seed``, ``num_train`` and
    ``num_val`` fields."""

    def num_images(self, split: str) -> int:
        """Image count of ``split`` ("train" or "val")."""
        return {"train": self.num_train, "val": self.num_val}[split]

    def as_json(self) -> Dict[str, Any]:
        """The parameters as JSON-compatible values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def json_path(root: str, split: str) -> str:
    """``<root>/annotations/instances_<split>.json``."""
    return os.path.join(root, "annotations", f"instances_{split}.json")


def generator_metadata(version: int, params: SplitParams) -> Dict[str, Any]:
    """The ``generator.json`` content that identifies a dataset: version and parameters."""
    return {"version": version, "params": params.as_json()}


def rle_segmentation(mask: np.ndarray) -> Dict[str, Any]:
    """COCO RLE (``{"size": [H, W], "counts": str}``) of an (H, W) bool mask."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotation(ann_id: int, image_id: int, obj: DrawnObject) -> dict:
    class_id, mask, segmentation = obj
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": class_id + 1,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float(mask.sum()),
        "iscrowd": 0,
        "segmentation": segmentation,
    }


def write_coco_splits(
    out_dir: str,
    *,
    name: str,
    version: int,
    params: SplitParams,
    classes: Sequence[str],
    draw: Callable[[np.random.Generator], Tuple[np.ndarray, List[DrawnObject]]],
) -> None:
    """Write both splits and ``generator.json`` into ``out_dir`` (no atomicity here: see
    :func:`~sephnet.data.generated_dataset.ensure_generated`).

    Args:
        name: the dataset's name, for the json files' description.
        version: the generator version (stored in ``generator.json`` and the description).
        params: the generator's parameters (``seed``, image counts per split).
        classes: class names in contiguous-id order; COCO category id = contiguous id + 1.
        draw: ``draw(rng)`` -> a BGR uint8 ``(H, W, 3)`` image and its objects
            ``[(class_id, mask, segmentation)]``.
    """
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    for split_index, split in enumerate(SPLITS):
        image_dir = os.path.join(out_dir, split)
        os.makedirs(image_dir, exist_ok=True)
        images, annotations = [], []
        for i in range(params.num_images(split)):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, split_index, i])))
            image, objects = draw(rng)
            image_id = i + 1
            file_name = f"{image_id:06d}.png"
            path = os.path.join(image_dir, file_name)
            if not cv2.imwrite(path, image):
                raise OSError(f"OpenCV could not write {path}")
            images.append({"id": image_id, "file_name": file_name,
                           "height": image.shape[0], "width": image.shape[1]})
            for obj in objects:
                annotations.append(_annotation(len(annotations) + 1, image_id, obj))
        coco = {
            "info": {"description": f"sephnet synthetic {name} ({split}), generator v{version}"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": class_name} for k, class_name in enumerate(classes)],
        }
        with open(json_path(out_dir, split), "w") as f:
            json.dump(coco, f)
    write_metadata(out_dir, generator_metadata(version, params))


def register_coco_splits(name: str, root: str, classes: Sequence[str],
                         ensure: Callable[[str], str]) -> None:
    """Register ``<name>_train`` and ``<name>_val`` in ``root`` (absolute), with COCO
    evaluation metadata; their loaders call ``ensure(root)`` (generate if needed) first.
    Already-registered names are left alone, so calling this twice is harmless."""
    for split in SPLITS:
        dataset = f"{name}_{split}"
        if dataset in DatasetCatalog.list():
            continue

        def load(split: str = split, dataset: str = dataset) -> List[dict]:
            ensure(root)
            return load_coco_json(json_path(root, split), os.path.join(root, split), dataset)

        DatasetCatalog.register(dataset, load)
        MetadataCatalog.get(dataset).set(
            thing_classes=list(classes),
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(classes))},
            json_file=json_path(root, split),
            image_root=os.path.join(root, split),
            evaluator_type="coco",
        )
