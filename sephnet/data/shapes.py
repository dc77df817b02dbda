"""sephnet's built-in synthetic dataset: coloured circles, squares and triangles.

Each image (a few sizes between 128x128 and 192x160, both orientations) has a smooth
textured background (an upsampled random colour field, a linear gradient and fine
noise) and 1-4 flat-coloured shapes of random size, colour and position. Three
thing classes, COCO category ids 1-3: ``circle``, ``square`` (axis-aligned) and
``triangle``.

Masks are exact by construction: every shape is a polygon (circles: a regular
32-gon), rasterised with pycocotools (the rasteriser detectron2 uses to turn polygon
annotations into masks), and the image pixels of the shape are painted from that very
mask. Shapes never share or touch pixels (a new shape must keep 2 px from the others,
or it is re-drawn), but their boxes may overlap. Each annotation's ``bbox`` is the
tight box of its mask in pixel-edge coordinates (XYWH), ``area`` its pixel count,
``segmentation`` the polygon.

Files: ``<root>/{train,val}/NNNNNN.png``, ``<root>/annotations/instances_{train,val}.json``
and ``<root>/generator.json`` (generator version + parameters). The data are generated
on first use (``DatasetCatalog.get("shapes_train")``) into a temporary folder that is
renamed into place (under a file lock), so an interrupted generation never leaves a
partial dataset; a stored generator version or parameter set that differs from the
current one triggers regeneration. The same parameters (seed included) give byte-identical files.

Root folder: ``$SEPHNET_SHAPES_DIR`` if set, else ``$DETECTRON2_DATASETS/shapes``, else
``./datasets/shapes``.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from sephnet.backend import DatasetCatalog, MetadataCatalog, load_coco_json

from .generated_dataset import default_root, ensure_generated, write_metadata

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_VERSION",
    "ShapesParams",
    "default_shapes_root",
    "ensure_shapes",
    "generate_shapes",
    "register_shapes",
]

SHAPES_VERSION = 1
"""Bump when the generator's output changes for the same parameters."""

SHAPES_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle")
"""Class names in contiguous-id order; COCO category id = contiguous id + 1."""

_SPLITS = ("train", "val")
_CIRCLE_VERTICES = 32
_GAP_PX = 2


@dataclasses.dataclass(frozen=True)
class ShapesParams:
    """Every parameter of the generator (stored with the data; a change regenerates).

    Attributes:
        seed: base seed; image ``i`` of split ``s`` uses ``SeedSequence([seed, s, i])``.
        num_train, num_val: images per split.
        image_sizes: the ``(height, width)`` choices.
        min_objects, max_objects: shapes per image (inclusive range).
        min_extent, max_extent: shape size in pixels (square side, circle diameter,
            triangle circumscribed diameter).
        max_attempts: placements tried per shape before giving up on it.
    """

    seed: int = 20240601
    num_train: int = 1000
    num_val: int = 100
    image_sizes: Tuple[Tuple[int, int], ...] = ((128, 128), (128, 160), (160, 128), (160, 192), (192, 160))
    min_objects: int = 1
    max_objects: int = 4
    min_extent: int = 20
    max_extent: int = 64
    max_attempts: int = 30

    def num_images(self, split: str) -> int:
        """Image count of ``split`` ("train" or "val")."""
        return {"train": self.num_train, "val": self.num_val}[split]

    def as_json(self) -> Dict[str, Any]:
        """The parameters as JSON-compatible values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def default_shapes_root() -> str:
    """``$SEPHNET_SHAPES_DIR``, else ``$DETECTRON2_DATASETS/shapes``, else ``datasets/shapes``."""
    return default_root("SEPHNET_SHAPES_DIR", "shapes")


def _json_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}.json")


def _expected_metadata(params: ShapesParams) -> Dict[str, Any]:
    return {"version": SHAPES_VERSION, "params": params.as_json()}


def ensure_shapes(root: Optional[str] = None, params: ShapesParams = ShapesParams()) -> str:
    """Make sure ``root`` holds the dataset for ``params``, generating it if needed
    (atomically, under a file lock: :func:`~sephnet.data.generated_dataset.ensure_generated`).

    Returns:
        The dataset root (absolute).
    """
    return ensure_generated(root or default_shapes_root(), _expected_metadata(params),
                            lambda out_dir: generate_shapes(out_dir, params))


def generate_shapes(out_dir: str, params: ShapesParams = ShapesParams()) -> None:
    """Write both splits and ``generator.json`` into ``out_dir`` (no atomicity here)."""
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    for split_index, split in enumerate(_SPLITS):
        image_dir = os.path.join(out_dir, split)
        os.makedirs(image_dir, exist_ok=True)
        images, annotations = [], []
        for i in range(params.num_images(split)):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, split_index, i])))
            image, shapes = _draw_image(rng, params)
            image_id = i + 1
            file_name = f"{image_id:06d}.png"
            if not cv2.imwrite(os.path.join(image_dir, file_name), image):
                raise OSError(f"OpenCV could not write {os.path.join(image_dir, file_name)}")
            images.append(
                {"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]}
            )
            for class_id, polygon, mask in shapes:
                annotations.append(_annotation(len(annotations) + 1, image_id, class_id, polygon, mask))
        coco = {
            "info": {"description": f"sephnet synthetic shapes ({split}), generator v{SHAPES_VERSION}"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(SHAPES_CLASSES)],
        }
        with open(_json_path(out_dir, split), "w") as f:
            json.dump(coco, f)
    write_metadata(out_dir, _expected_metadata(params))


def _annotation(ann_id: int, image_id: int, class_id: int, polygon: List[float], mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": class_id + 1,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float(mask.sum()),
        "iscrowd": 0,
        "segmentation": [polygon],
    }


def _rasterize(polygon: List[float], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one flat XY polygon, with pycocotools' rasteriser."""
    rle = mask_util.merge(mask_util.frPyObjects([polygon], height, width))
    return mask_util.decode(rle).astype(bool)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 smooth texture in about [40, 215]."""
    coarse = rng.uniform(60, 196, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[:, :, None]
    field = field + ramp * rng.uniform(-40, 40, size=3).astype(np.float32)
    field = field + rng.normal(0, 4, size=field.shape).astype(np.float32)
    return np.clip(field, 0, 255)


def _shape_polygon(rng: np.random.Generator, class_id: int, height: int, width: int, params: ShapesParams) -> List[float]:
    """A random polygon of class ``class_id`` lying inside the image (flat XY list)."""
    extent = rng.uniform(params.min_extent, params.max_extent)
    half = extent / 2
    cx = rng.uniform(half + 1, width - half - 1)
    cy = rng.uniform(half + 1, height - half - 1)
    if class_id == 1:  # square, integer corners
        side = int(round(extent))
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        points = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], np.float64)
    elif class_id == 0:  # circle as a regular 32-gon
        theta = np.arange(_CIRCLE_VERTICES) * (2 * np.pi / _CIRCLE_VERTICES)
        points = np.stack([cx + half * np.cos(theta), cy + half * np.sin(theta)], axis=1)
    else:  # triangle: three jittered vertices on the circumscribed circle
        base = rng.uniform(0, 2 * np.pi)
        theta = base + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, size=3)
        radius = half * rng.uniform(0.8, 1.0, size=3)
        points = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)
    points[:, 0] = np.clip(points[:, 0], 0, width)
    points[:, 1] = np.clip(points[:, 1], 0, height)
    return [round(float(v), 2) for v in points.reshape(-1)]


def _pick_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A colour at least 100 (RGB L2) away from the local background (best of 20 draws)."""
    best, best_dist = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        dist = float(np.linalg.norm(colour - background_mean))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= 100:
            break
    return best


def _draw_image(rng: np.random.Generator, params: ShapesParams):
    """One BGR uint8 image and its shapes as ``[(class_id, polygon, mask)]``."""
    height, width = params.image_sizes[int(rng.integers(len(params.image_sizes)))]
    canvas = _background(rng, height, width)
    occupied = np.zeros((height, width), np.uint8)
    kernel = np.ones((2 * _GAP_PX + 1, 2 * _GAP_PX + 1), np.uint8)
    shapes = []
    for _ in range(int(rng.integers(params.min_objects, params.max_objects + 1))):
        class_id = int(rng.integers(len(SHAPES_CLASSES)))
        for _attempt in range(params.max_attempts):
            polygon = _shape_polygon(rng, class_id, height, width, params)
            mask = _rasterize(polygon, height, width)
            if mask.sum() >= 16 and not (mask & (cv2.dilate(occupied, kernel) > 0)).any():
                break
        else:
            continue
        colour = _pick_colour(rng, canvas[mask].mean(axis=0))
        canvas[mask] = colour + rng.normal(0, 3, size=(int(mask.sum()), 3))
        occupied |= mask.astype(np.uint8)
        shapes.append((class_id, polygon, mask))
    if not shapes:  # the first shape always fits an empty canvas; kept as a hard guarantee
        raise RuntimeError("shapes generator placed no object; check ShapesParams extents")
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), shapes


def _shapes_metadata(root: str, split: str) -> Dict[str, Any]:
    return {
        "thing_classes": list(SHAPES_CLASSES),
        "thing_dataset_id_to_contiguous_id": {k + 1: k for k in range(len(SHAPES_CLASSES))},
        "json_file": _json_path(root, split),
        "image_root": os.path.join(root, split),
        "evaluator_type": "coco",
    }


def register_shapes(root: Optional[str] = None, params: ShapesParams = ShapesParams()) -> None:
    """Register ``shapes_train`` and ``shapes_val`` (generated lazily on first ``get``).

    Args:
        root: dataset folder; default :func:`default_shapes_root` (read now).
        params: generator parameters.

    Already-registered names are left alone, so calling this twice is harmless.
    """
    root = os.path.abspath(root or default_shapes_root())
    for split in _SPLITS:
        name = f"shapes_{split}"
        if name in DatasetCatalog.list():
            continue

        def load(split: str = split, name: str = name) -> List[dict]:
            ensure_shapes(root, params)
            return load_coco_json(_json_path(root, split), os.path.join(root, split), name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(**_shapes_metadata(root, split))
