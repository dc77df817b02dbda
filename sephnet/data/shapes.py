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
import os
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .generated_dataset import default_root, ensure_generated
from .synthetic import SplitParams, generator_metadata, register_coco_splits, write_coco_splits

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

_CIRCLE_VERTICES = 32
_GAP_PX = 2


@dataclasses.dataclass(frozen=True)
class ShapesParams(SplitParams):
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


def default_shapes_root() -> str:
    """``$SEPHNET_SHAPES_DIR``, else ``$DETECTRON2_DATASETS/shapes``, else ``datasets/shapes``."""
    return default_root("SEPHNET_SHAPES_DIR", "shapes")


def ensure_shapes(root: Optional[str] = None, params: ShapesParams = ShapesParams()) -> str:
    """Make sure ``root`` holds the dataset for ``params``, generating it if needed
    (atomically, under a file lock: :func:`~sephnet.data.generated_dataset.ensure_generated`).

    Returns:
        The dataset root (absolute).
    """
    return ensure_generated(root or default_shapes_root(), generator_metadata(SHAPES_VERSION, params),
                            lambda out_dir: generate_shapes(out_dir, params))


def generate_shapes(out_dir: str, params: ShapesParams = ShapesParams()) -> None:
    """Write both splits and ``generator.json`` into ``out_dir`` (no atomicity here)."""
    write_coco_splits(out_dir, name="shapes", version=SHAPES_VERSION, params=params,
                      classes=SHAPES_CLASSES, draw=lambda rng: _draw_image(rng, params))


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
    """One BGR uint8 image and its shapes as ``[(class_id, mask, [polygon])]``."""
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
        shapes.append((class_id, mask, [polygon]))
    if not shapes:  # the first shape always fits an empty canvas; kept as a hard guarantee
        raise RuntimeError("shapes generator placed no object; check ShapesParams extents")
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), shapes


def register_shapes(root: Optional[str] = None, params: ShapesParams = ShapesParams()) -> None:
    """Register ``shapes_train`` and ``shapes_val`` (generated lazily on first ``get``).

    Args:
        root: dataset folder; default :func:`default_shapes_root` (read now).
        params: generator parameters.

    Already-registered names are left alone, so calling this twice is harmless.
    """
    register_coco_splits("shapes", os.path.abspath(root or default_shapes_root()), SHAPES_CLASSES,
                         lambda folder: ensure_shapes(folder, params))
