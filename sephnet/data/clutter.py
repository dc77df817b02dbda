"""sephnet's harder built-in dataset: eight look-alike shape classes in cluttered, textured scenes.

Made for proxy ablations (``python -m sephnet.tools.ablate --proxy``): small enough to
train a detector on a CPU in minutes, hard enough that a small Mask R-CNN stays well below
saturation so that component differences show. What makes it hard:

- eight classes in four look-alike pairs: ``circle``/``hexagon``, ``square``/``rectangle``
  (aspect 2-4, either orientation), ``triangle``/``arrowhead`` (a triangle with a notch
  cut into its base), ``plus``/``cross`` (the plus turned by about 45 degrees); triangles,
  arrowheads, pluses, crosses and hexagons are also stretched by up to 1.16x along one axis,
  and all are rotated (squares and rectangles by at most 11 degrees);
- object sizes drawn log-uniformly from 30 to 128 px (outline diameter; with the defaults
  about 45% of the objects are COCO "small", area < 32^2), 2-6 objects per image;
- occlusion: objects are painted back to front and may overlap earlier ones, each keeping
  at least ``min_visible`` of its own area visible; an annotation's mask is the visible part
  (it can be non-convex, split in two, or hold holes);
- colour carries no class information, and objects are flat (half of them), striped or
  checked, on a background of multi-scale noise, a colour gradient and
  unlabelled clutter (line strokes and irregular blobs), with pixel noise over everything.

Images are 160-224 px (160x160, 160x192, 192x160, 160x224, 224x160), stored at the size the
proxy trains and tests at. Segmentations are COCO RLE (``{"size", "counts"}``), so a model
reads them with ``INPUT.MASK_FORMAT: "bitmask"``; ``bbox`` is the tight box of the mask in
pixel-edge XYWH and ``area`` its pixel count.

Files, root folder and generation follow the shapes dataset: ``<root>/{train,val}/NNNNNN.png``,
``<root>/annotations/instances_{train,val}.json``, ``<root>/generator.json``; generated on
first use, atomically (:mod:`sephnet.data.generated_dataset`); the same parameters give
byte-identical files. Root: ``$SEPHNET_CLUTTER_DIR``, else ``$DETECTRON2_DATASETS/clutter``,
else ``./datasets/clutter``. Registered as ``clutter_train`` / ``clutter_val``.
"""
import dataclasses
import os
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .generated_dataset import default_root, ensure_generated
from .synthetic import (
    SPLITS,
    SplitParams,
    generator_metadata,
    json_path,
    register_coco_splits,
    rle_segmentation,
    write_coco_splits,
)

__all__ = [
    "CLUTTER_CLASSES",
    "CLUTTER_VERSION",
    "ClutterParams",
    "clutter_json_files",
    "default_clutter_root",
    "ensure_clutter",
    "generate_clutter",
    "register_clutter",
]

CLUTTER_VERSION = 2
"""Bump when the generator's output changes for the same parameters."""

CLUTTER_CLASSES: Tuple[str, ...] = (
    "circle", "hexagon", "square", "rectangle", "triangle", "arrowhead", "plus", "cross",
)
"""Class names in contiguous-id order (look-alike pairs adjacent); COCO id = contiguous id + 1."""

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision: vertices on a 1/16 px grid


@dataclasses.dataclass(frozen=True)
class ClutterParams(SplitParams):
    """Every parameter of the generator (stored with the data; a change regenerates).

    Attributes:
        seed: base seed; image ``i`` of split ``s`` uses ``SeedSequence([seed, s, i])``.
        num_train, num_val: images per split.
        image_sizes: the ``(height, width)`` choices.
        min_objects, max_objects: objects per image (inclusive range; fewer when
            placements fail).
        min_extent, max_extent: object size in px (diameter of the circle around the
            unstretched outline), drawn log-uniformly.
        min_visible: fraction of an object's own area that must stay visible when later
            objects are painted over it.
        max_attempts: placements tried per object before giving up on it.
    """

    seed: int = 20241203
    num_train: int = 1000
    num_val: int = 200
    image_sizes: Tuple[Tuple[int, int], ...] = ((160, 160), (160, 192), (192, 160), (160, 224), (224, 160))
    min_objects: int = 2
    max_objects: int = 6
    min_extent: float = 30.0
    max_extent: float = 128.0
    min_visible: float = 0.8
    max_attempts: int = 20


def default_clutter_root() -> str:
    """``$SEPHNET_CLUTTER_DIR``, else ``$DETECTRON2_DATASETS/clutter``, else ``datasets/clutter``."""
    return default_root("SEPHNET_CLUTTER_DIR", "clutter")


def ensure_clutter(root: Optional[str] = None, params: ClutterParams = ClutterParams()) -> str:
    """Make sure ``root`` holds the dataset for ``params``, generating it if needed
    (atomically, under a file lock). Returns the dataset root (absolute)."""
    return ensure_generated(root or default_clutter_root(), generator_metadata(CLUTTER_VERSION, params),
                            lambda out_dir: generate_clutter(out_dir, params))


def generate_clutter(out_dir: str, params: ClutterParams = ClutterParams()) -> None:
    """Write both splits and ``generator.json`` into ``out_dir`` (no atomicity here);
    segmentations are RLE of the visible masks."""

    def draw(rng: np.random.Generator):
        image, objects = _draw_image(rng, params)
        return image, [(class_id, mask, rle_segmentation(mask)) for class_id, mask in objects]

    write_coco_splits(out_dir, name="clutter", version=CLUTTER_VERSION, params=params,
                      classes=CLUTTER_CLASSES, draw=draw)


# ---------------------------------------------------------------------------- shapes
# An outline is a (K, 2) polygon centred at 0 inside the unit circle; _draw_image scales,
# rotates and moves it.


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    theta = phase + np.arange(n) * (2 * np.pi / n)
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _plus(arm: float) -> np.ndarray:
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                     [-a, a], [-1, a], [-1, -a], [-a, -a]]) / np.sqrt(1 + a * a)


def _outline(rng: np.random.Generator, class_id: int) -> Tuple[np.ndarray, float]:
    """A unit outline of class ``class_id`` and its rotation in radians."""
    name = CLUTTER_CLASSES[class_id]
    if name == "circle":
        return _regular(32), 0.0
    if name == "hexagon":
        return _regular(6), rng.uniform(0, np.pi / 3)
    if name in ("square", "rectangle"):
        aspect = 1.0 if name == "square" else rng.uniform(2.0, 4.0)
        half = np.array([aspect, 1.0]) if rng.random() < 0.5 else np.array([1.0, aspect])
        half = half / np.hypot(*half)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        return corners, rng.uniform(-0.2, 0.2)
    if name in ("triangle", "arrowhead"):
        top, right, left = _regular(3, -np.pi / 2)  # the base runs along y = 0.5
        if name == "triangle":
            return np.stack([top, right, left]), rng.uniform(0, 2 * np.pi)
        notch = np.array([0.0, 0.5 - rng.uniform(0.5, 0.75)])  # cut up into the base
        return np.stack([top, right, notch, left]), rng.uniform(0, 2 * np.pi)
    base = 0.0 if name == "plus" else np.pi / 4  # plus or cross
    return _plus(rng.uniform(0.25, 0.4)), base + rng.uniform(-0.25, 0.25)


def _polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of the (K, 2) XY polygon ``points`` (sub-pixel vertices)."""
    mask = np.zeros((height, width), np.uint8)
    fixed = np.rint(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


def _noise_field(rng: np.random.Generator, height: int, width: int, cells: int, amplitude: float
                 ) -> np.ndarray:
    """(H, W, 3) float32 smooth noise: a ``cells``-wide random grid upsampled bicubically."""
    coarse = rng.normal(0, amplitude, size=(cells, cells, 3)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 texture: a base colour, a linear gradient, noise at three scales,
    then unlabelled clutter (line strokes and irregular blobs)."""
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = rng.uniform(50, 205, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[:, :, None]
    canvas += ramp * rng.uniform(-50, 50, size=3).astype(np.float32)
    for cells, amplitude in ((4, 12.0), (16, 6.0), (48, 3.0)):
        canvas += _noise_field(rng, height, width, cells, amplitude)
    for _ in range(int(rng.integers(1, 4))):  # strokes
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(canvas, p0, p1, rng.uniform(0, 255, size=3).tolist(), int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 3))):  # blobs: 12-gons with random radii
        theta = np.sort(rng.uniform(0, 2 * np.pi, size=12))
        radius = rng.uniform(3, 14) * rng.uniform(0.4, 1.0, size=12)
        centre = rng.uniform([0, 0], [width, height])
        points = centre + np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
        canvas[_polygon_mask(points, height, width)] = rng.uniform(0, 255, size=3)
    return canvas


def _fill(rng: np.random.Generator, mask: np.ndarray, background_mean: np.ndarray) -> np.ndarray:
    """(M, 3) float32 pixel values for the M pixels of ``mask``: a colour far from the local
    background (the first of up to 20 draws at least 90 away in RGB L2, else the farthest),
    flat, striped or checked."""
    colour, best = None, -1.0
    for _ in range(20):
        candidate = rng.uniform(0, 255, size=3)
        dist = float(np.linalg.norm(candidate - background_mean))
        if dist > best:
            colour, best = candidate, dist
        if dist >= 90:
            break
    ys, xs = np.nonzero(mask)
    kind = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
    if kind == 0:  # flat
        pattern = np.zeros(len(xs), np.float32)
    elif kind == 1:  # stripes of random period and direction
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        pattern = np.sign(np.sin((np.cos(angle) * xs + np.sin(angle) * ys) * (2 * np.pi / period)))
    else:  # checks
        cell = int(rng.integers(2, 5))
        pattern = ((xs // cell + ys // cell) % 2) * 2.0 - 1.0
    amplitude = rng.uniform(6, 14) * rng.choice([-1.0, 1.0], size=3)
    return (colour[None, :] + pattern[:, None] * amplitude[None, :]).astype(np.float32)


def _draw_image(rng: np.random.Generator, params: ClutterParams):
    """One BGR uint8 image and its objects as ``[(class_id, visible (H, W) bool mask)]``,
    back to front."""
    height, width = params.image_sizes[int(rng.integers(len(params.image_sizes)))]
    canvas = _background(rng, height, width)
    full_areas: List[int] = []
    objects: List[Tuple[int, np.ndarray]] = []
    log_lo, log_hi = np.log(params.min_extent), np.log(params.max_extent)
    for _ in range(int(rng.integers(params.min_objects, params.max_objects + 1))):
        class_id = int(rng.integers(len(CLUTTER_CLASSES)))
        outline, angle = _outline(rng, class_id)
        if CLUTTER_CLASSES[class_id] not in ("circle", "square", "rectangle"):
            outline = outline * np.exp(rng.uniform(-0.15, 0.15)) ** np.array([0.5, -0.5])  # stretch
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        for _attempt in range(params.max_attempts):
            radius = np.exp(rng.uniform(log_lo, log_hi)) / 2
            centre = rng.uniform([radius, radius], [width - radius, height - radius])
            mask = _polygon_mask(outline @ rotation.T * radius + centre, height, width)
            if mask.sum() < 12:
                continue
            if all((visible & ~mask).sum() >= params.min_visible * area
                   for (_, visible), area in zip(objects, full_areas)):
                break
        else:
            continue
        canvas[mask] = _fill(rng, mask, canvas[mask].mean(axis=0))
        for _, visible in objects:
            visible &= ~mask
        objects.append((class_id, mask))
        full_areas.append(int(mask.sum()))
    if not objects:  # the first object always fits an empty canvas; kept as a hard guarantee
        raise RuntimeError("clutter generator placed no object; check ClutterParams extents")
    canvas += rng.normal(0, rng.uniform(1, 4), size=canvas.shape).astype(np.float32)
    if rng.random() < 0.2:
        canvas = cv2.GaussianBlur(canvas, (3, 3), 0.7)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), objects


def clutter_json_files(root: Optional[str] = None) -> List[str]:
    """The train and val json files of the dataset in ``root`` (generated if needed)."""
    root = ensure_clutter(root)
    return [json_path(root, split) for split in SPLITS]


def register_clutter(root: Optional[str] = None, params: ClutterParams = ClutterParams()) -> None:
    """Register ``clutter_train`` and ``clutter_val`` (generated lazily on first ``get``).

    Args:
        root: dataset folder; default :func:`default_clutter_root` (read now).
        params: generator parameters.

    Already-registered names are left alone, so calling this twice is harmless.
    """
    register_coco_splits("clutter", os.path.abspath(root or default_clutter_root()), CLUTTER_CLASSES,
                         lambda folder: ensure_clutter(folder, params))
