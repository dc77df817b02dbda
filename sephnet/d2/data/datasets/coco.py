"""COCO-format instance annotations <-> detectron2 dataset dicts (detectron2.data.datasets.coco).

:func:`load_coco_json` reads a COCO instances json (via pycocotools) into
``list[dict]``; :func:`convert_to_coco_dict` / :func:`convert_to_coco_json` go the
other way for a registered dataset (the COCO evaluator uses them);
:func:`register_coco_instances` registers a json + image folder lazily.
"""
import contextlib
import datetime
import io
import json
import logging
import math
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import pycocotools.mask as mask_util
from fvcore.common.timer import Timer
from iopath.common.file_io import file_lock

from sephnet.d2.structures import Boxes, BoxMode, PolygonMasks
from sephnet.d2.utils.file_io import PathManager

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "load_coco_json",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "register_coco_instances",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def load_coco_json(
    json_file: str,
    image_root: PathLike,
    dataset_name: Optional[str] = None,
    extra_annotation_keys: Optional[List[str]] = None,
) -> List[Dict[str, Any]]:
    """Load a COCO instances json into detectron2's dataset dicts.

    Each returned dict has ``file_name`` (``image_root`` joined with the json's name),
    ``height``, ``width``, ``image_id`` and ``annotations``: a list of dicts with
    ``bbox`` (XYWH as in the json), ``bbox_mode=BoxMode.XYWH_ABS``, ``category_id``,
    ``iscrowd`` (when present), ``segmentation`` (polygons with fewer than 3 points
    dropped; an instance left without any valid polygon is dropped and counted;
    uncompressed RLE converted to compressed RLE), keypoints (+0.5 to turn pixel indices
    into coordinates) and the ``extra_annotation_keys``. Images are sorted by id. Image
    files are not read.

    Args:
        json_file: path of the COCO json.
        image_root: folder the json's ``file_name`` entries are relative to.
        dataset_name: when given, its metadata receives ``thing_classes`` (category
            names sorted by category id) and ``thing_dataset_id_to_contiguous_id``, and
            ``category_id`` values are mapped to contiguous ids ``0..K-1``.
        extra_annotation_keys: further per-annotation keys copied as they are.

    Raises:
        KeyError: an annotation's category id is not in the json's ``categories``.
        ValueError: annotation ids are not unique, an annotation has an empty bbox or
            uses the unsupported ``ignore`` flag.
    """
    from pycocotools.coco import COCO

    timer = Timer()
    json_file = PathManager.get_local_path(json_file)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_api = COCO(json_file)
    if timer.seconds() > 1:
        logger.info("Loading %s takes %.2f seconds.", json_file, timer.seconds())

    id_map = None
    if dataset_name is not None:
        id_map = _record_category_metadata(coco_api, dataset_name)

    img_ids = sorted(coco_api.imgs.keys())
    imgs = coco_api.loadImgs(img_ids)
    anns = [coco_api.imgToAnns[img_id] for img_id in img_ids]
    num_matched = sum(len(x) for x in anns)
    if num_matched < len(coco_api.anns):
        logger.warning(
            "%s contains %d annotations, but only %d of them match to images in the file.",
            json_file, len(coco_api.anns), num_matched,
        )
    if "minival" not in json_file:
        # COCO 2014 minival/valminusminival share annotation ids; upstream tolerates them.
        ann_ids = [a["id"] for per_image in anns for a in per_image]
        if len(set(ann_ids)) != len(ann_ids):
            raise ValueError(f"Annotation ids in '{json_file}' are not unique!")
    logger.info("Loaded %d images in COCO format from %s", len(imgs), json_file)

    ann_keys = ["iscrowd", "bbox", "keypoints", "category_id"] + list(extra_annotation_keys or [])
    dataset_dicts = []
    num_without_valid_segm = 0
    for img_dict, img_anns in zip(imgs, anns):
        image_id = img_dict["id"]
        record = {
            "file_name": os.path.join(image_root, img_dict["file_name"]),
            "height": img_dict["height"],
            "width": img_dict["width"],
            "image_id": image_id,
        }
        objs = []
        for anno in img_anns:
            obj = _convert_annotation(anno, image_id, ann_keys, id_map, json_file)
            if obj is None:
                num_without_valid_segm += 1
                continue
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)

    if num_without_valid_segm > 0:
        logger.warning(
            "Filtered out %d instances without valid segmentation. There might be issues in "
            "your dataset generation process.", num_without_valid_segm,
        )
    num_zero_area = sum(
        1 for r in dataset_dicts for a in r["annotations"]
        if "bbox" in a and min(a["bbox"][2:]) == 0
    )
    if num_zero_area > 0:
        logger.warning(
            "%d annotations in '%s' have a zero-width or zero-height bbox; training drops them "
            "(filter_empty_instances).", num_zero_area, json_file,
        )
    return dataset_dicts


def _record_category_metadata(coco_api, dataset_name: str) -> Dict[int, int]:
    """Store thing_classes / id mapping in the dataset's metadata; return the mapping."""
    meta = MetadataCatalog.get(dataset_name)
    cat_ids = sorted(coco_api.getCatIds())
    cats = sorted(coco_api.loadCats(cat_ids), key=lambda c: c["id"])
    meta.thing_classes = [c["name"] for c in cats]
    if cat_ids and not (min(cat_ids) == 1 and max(cat_ids) == len(cat_ids)):
        if "coco" not in dataset_name:
            logger.warning(
                "Category ids in annotations are not in [1, #categories]! "
                "We'll apply a mapping for you."
            )
    id_map = {cat_id: i for i, cat_id in enumerate(cat_ids)}
    meta.thing_dataset_id_to_contiguous_id = id_map
    return id_map


def _convert_annotation(
    anno: Dict[str, Any],
    image_id: int,
    ann_keys: List[str],
    id_map: Optional[Dict[int, int]],
    json_file: str,
) -> Optional[Dict[str, Any]]:
    """One COCO annotation -> a dataset-dict annotation; None if no valid polygon is left."""
    if anno["image_id"] != image_id:
        raise ValueError(
            f"Annotation {anno.get('id')} in '{json_file}' belongs to image "
            f"{anno['image_id']} but was listed under image {image_id}."
        )
    if anno.get("ignore", 0) != 0:
        raise ValueError(
            f'Annotation {anno.get("id")} in \'{json_file}\' sets "ignore", which COCO json '
            "files loaded by detectron2 do not support."
        )
    obj = {key: anno[key] for key in ann_keys if key in anno}
    if "bbox" in obj and len(obj["bbox"]) == 0:
        raise ValueError(
            f"Image {image_id} has an annotation without a 'bbox'. "
            "The json is not in COCO instances format."
        )
    if "bbox" in obj:
        _check_bbox(obj["bbox"], anno.get("id"), image_id, json_file)

    segm = anno.get("segmentation", None)
    if segm:
        if isinstance(segm, dict):
            if isinstance(segm["counts"], list):
                segm = mask_util.frPyObjects(segm, *segm["size"])
        else:
            segm = [poly for poly in segm if len(poly) % 2 == 0 and len(poly) >= 6]
            if not segm:
                return None
        obj["segmentation"] = segm

    keypoints = anno.get("keypoints", None)
    if keypoints:
        # COCO keypoints are pixel indices; +0.5 makes them continuous coordinates.
        obj["keypoints"] = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(keypoints)]

    obj["bbox_mode"] = BoxMode.XYWH_ABS
    if id_map:
        dataset_id = obj["category_id"]
        if dataset_id not in id_map:
            raise KeyError(
                f"Encountered category_id={dataset_id} in '{json_file}' but this id does not "
                f"exist in 'categories' of the json file (ids: {sorted(id_map)})."
            )
        obj["category_id"] = id_map[dataset_id]
    return obj


def _check_bbox(bbox: Any, ann_id: Any, image_id: int, json_file: str) -> None:
    """Raise ``ValueError`` naming the annotation unless ``bbox`` is 4 finite numbers
    ``[x, y, width, height]`` with ``width, height >= 0`` (core addition: detectron2 v0.6
    would silently turn a negative size into a flipped box and NaN into garbage)."""
    where = f"Annotation {ann_id} of image {image_id} in '{json_file}' has bbox={bbox}"
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise ValueError(f"{where}; expected 4 numbers [x, y, width, height].") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}; expected 4 finite numbers [x, y, width, height].")
    if values[2] < 0 or values[3] < 0:
        raise ValueError(
            f"{where}; expected width and height >= 0 (COCO boxes are [x, y, width, height], "
            "not [x1, y1, x2, y2])."
        )


def convert_to_coco_dict(dataset_name: str) -> Dict[str, Any]:
    """Convert a registered dataset (detectron2 format) into a COCO json dict.

    Category ids are mapped back through ``thing_dataset_id_to_contiguous_id`` when
    the metadata has it. Annotation ``id`` s start at 1; ``area`` is the mask area
    (polygon or RLE) or, without a mask, the box area; RLE ``counts`` become str.

    Returns:
        dict with "info", "images", "categories", "licenses" and (if any)
        "annotations".
    """
    dataset_dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    to_dataset_id: Callable[[int], int]
    if hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        reverse = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
        to_dataset_id = reverse.__getitem__
    else:
        to_dataset_id = lambda contiguous_id: contiguous_id  # noqa: E731

    categories = [
        {"id": to_dataset_id(i), "name": name} for i, name in enumerate(metadata.thing_classes)
    ]
    logger.info("Writing the dataset dicts as a COCO json")
    coco_images, coco_annotations = [], []
    for index, image_dict in enumerate(dataset_dicts):
        coco_image = {
            "id": image_dict.get("image_id", index),
            "width": int(image_dict["width"]),
            "height": int(image_dict["height"]),
            "file_name": str(image_dict["file_name"]),
        }
        coco_images.append(coco_image)
        for annotation in image_dict.get("annotations", []):
            coco_annotation = _to_coco_annotation(annotation, to_dataset_id)
            coco_annotation["id"] = len(coco_annotations) + 1
            coco_annotation["image_id"] = coco_image["id"]
            coco_annotations.append(coco_annotation)

    logger.info(
        "Conversion finished, #images: %d, #annotations: %d",
        len(coco_images), len(coco_annotations),
    )
    info = {
        "date_created": str(datetime.datetime.now()),
        "description": "COCO json written by sephnet's core from registered dataset dicts.",
    }
    coco_dict = {"info": info, "images": coco_images, "categories": categories, "licenses": None}
    if coco_annotations:
        coco_dict["annotations"] = coco_annotations
    return coco_dict


def _to_coco_annotation(annotation: Dict[str, Any], to_dataset_id: Callable[[int], int]) -> dict:
    """The COCO fields (bbox XYWH, area, iscrowd, category_id, segmentation) of one instance."""
    bbox = annotation["bbox"]
    if isinstance(bbox, np.ndarray):
        if bbox.ndim != 1:
            raise ValueError(f"bbox must be a flat sequence of 4 numbers, got shape={bbox.shape}.")
        bbox = bbox.tolist()
    if len(bbox) != 4:
        raise ValueError(
            f"bbox must have 4 values (rotated boxes are not supported by the core); got {bbox}."
        )
    bbox = BoxMode.convert(bbox, annotation["bbox_mode"], BoxMode.XYWH_ABS)

    out: Dict[str, Any] = {}
    segmentation = annotation.get("segmentation")
    if "segmentation" in annotation:
        if isinstance(segmentation, list):
            area = PolygonMasks([segmentation]).area()[0].item()
        elif isinstance(segmentation, dict):
            area = mask_util.area(segmentation).item()
        else:
            raise TypeError(f"Unknown segmentation type {type(segmentation).__name__}!")
    else:
        xyxy = BoxMode.convert(bbox, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        area = Boxes([xyxy]).area()[0].item()

    out["bbox"] = [round(float(x), 3) for x in bbox]
    out["area"] = float(area)
    out["iscrowd"] = int(annotation.get("iscrowd", 0))
    out["category_id"] = int(to_dataset_id(annotation["category_id"]))
    if "segmentation" in annotation:
        if isinstance(segmentation, dict) and not isinstance(segmentation["counts"], str):
            # json needs str; the dataset dict keeps its own object unchanged.
            segmentation = dict(segmentation, counts=segmentation["counts"].decode("ascii"))
        out["segmentation"] = segmentation
    return out


def convert_to_coco_json(dataset_name: str, output_file: str, allow_cached: bool = True) -> None:
    """Write :func:`convert_to_coco_dict` of ``dataset_name`` to ``output_file``.

    With ``allow_cached`` an existing file is reused as it is (delete it after changing
    the dataset). The file is written to ``<output_file>.tmp`` then moved, under a file
    lock, so concurrent processes never read a partial file.
    """
    PathManager.mkdirs(os.path.dirname(output_file))
    with file_lock(output_file):
        if PathManager.exists(output_file) and allow_cached:
            logger.warning(
                "Using previously cached COCO format annotations at '%s'. You need to clear "
                "the cache file if your dataset has been modified.", output_file,
            )
            return
        logger.info("Converting annotations of dataset '%s' to COCO format ...", dataset_name)
        coco_dict = convert_to_coco_dict(dataset_name)
        logger.info("Caching COCO format annotations at '%s' ...", output_file)
        tmp_file = output_file + ".tmp"
        with PathManager.open(tmp_file, "w") as f:
            json.dump(coco_dict, f)
        shutil.move(tmp_file, output_file)


def register_coco_instances(
    name: str, metadata: Dict[str, Any], json_file: PathLike, image_root: PathLike
) -> None:
    """Register a COCO instances json + image folder as dataset ``name`` (lazily loaded).

    The metadata of ``name`` gets ``json_file``, ``image_root``,
    ``evaluator_type="coco"`` and the entries of ``metadata``.

    Raises:
        TypeError: an argument has the wrong type.
    """
    if not isinstance(name, str):
        raise TypeError(f"register_coco_instances: name must be a str; got {name!r}.")
    for arg, value in (("json_file", json_file), ("image_root", image_root)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"register_coco_instances: {arg} must be a path; got {value!r}.")
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )
