"""Dataset-level mixes of training samples: MixUp, CutMix and Mosaic.

A :class:`Sample` is one image already read and augmented, with its instance annotations
in that image's coordinates (detectron2's dataset format after
``transform_instance_annotations``: ``bbox`` a float XYXY_ABS array of 4, ``category_id``,
and optionally ``segmentation``: a list of flat polygon arrays, or an ``(H, W)`` uint8
mask). The mixes move every annotation with the pixels it covers:

* placing (part of) a sample on a canvas clips its boxes and polygons to the visible
  rectangle and shifts them; masks are cut and pasted;
* covering a rectangle (CutMix) removes it from the covered instances: a polygon becomes
  its pieces in the four bands around the rectangle, a mask is zeroed there, a box
  becomes the tight box of what is left of it.

Instances with nothing left are dropped. With masks, the mapper then takes the masks'
tight boxes as ``gt_boxes``, so boxes and masks agree exactly. Canvas pixels that no
sample covers are 0.

All integer rectangles are ``(x0, y0, x1, y1)`` in pixel edges.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Sample", "clip_polygon", "place", "cover", "mixup", "cutmix", "cutmix_rectangle", "mosaic", "mosaic_layout",
]

Rect = Tuple[int, int, int, int]


@dataclass
class Sample:
    """One augmented training image.

    Attributes:
        image: ``(H, W, C)`` uint8 image.
        annotations: its instances (see the module docstring), non-crowd.
    """

    image: np.ndarray
    annotations: List[Dict[str, Any]]

    @property
    def size(self) -> Tuple[int, int]:
        """``(H, W)``."""
        return self.image.shape[0], self.image.shape[1]


def clip_polygon(points: np.ndarray, rect: Sequence[float]) -> np.ndarray:
    """The part of a polygon inside an axis-aligned rectangle (Sutherland-Hodgman).

    Args:
        points: ``(N, 2)`` XY vertices of a simple polygon (any orientation).
        rect: ``(x0, y0, x1, y1)``.

    Returns:
        ``(M, 2)`` vertices of the clipped polygon (``M = 0`` when nothing is inside;
        a non-convex input may give zero-width bridges along the rectangle's edges,
        which enclose no area).
    """
    x0, y0, x1, y1 = rect
    # each edge of the rectangle: (axis, bound, keep points with coord >= bound?)
    edges = ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False))
    out = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for axis, bound, keep_above in edges:
        if len(out) == 0:
            break
        inside = out[:, axis] >= bound if keep_above else out[:, axis] <= bound
        previous = np.roll(out, 1, axis=0)
        previous_inside = np.roll(inside, 1)
        result = []
        for p, q, p_in, q_in in zip(out, previous, inside, previous_inside):
            if p_in != q_in:  # the edge q -> p crosses the bound: add the crossing point
                t = (bound - q[axis]) / (p[axis] - q[axis])
                result.append(q + t * (p - q))
            if p_in:
                result.append(p)
        out = np.asarray(result, dtype=np.float64).reshape(-1, 2)
    return out


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip_box(box: np.ndarray, rect: Sequence[float]) -> Optional[np.ndarray]:
    """``box`` cut to ``rect``, or None when they do not overlap with positive area."""
    out = np.array(
        [max(box[0], rect[0]), max(box[1], rect[1]), min(box[2], rect[2]), min(box[3], rect[3])],
        dtype=np.float64,
    )
    return out if out[2] > out[0] and out[3] > out[1] else None


def _clip_polygons(polygons: List[np.ndarray], rect: Sequence[float]) -> List[np.ndarray]:
    pieces = []
    for polygon in polygons:
        clipped = clip_polygon(np.asarray(polygon).reshape(-1, 2), rect)
        if len(clipped) >= 3 and _polygon_area(clipped) > 0:
            pieces.append(clipped.reshape(-1))
    return pieces


def _is_empty(annotation: Dict[str, Any]) -> bool:
    if "segmentation" not in annotation:
        box = annotation["bbox"]
        return not (box[2] > box[0] and box[3] > box[1])
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, np.ndarray):
        return not segmentation.any()
    return len(segmentation) == 0


def place(annotations: List[Dict[str, Any]], rect: Rect, offset: Tuple[int, int], canvas_size: Tuple[int, int]) -> List[Dict[str, Any]]:
    """Annotations of the part ``rect`` of a sample, moved by ``offset`` onto a canvas.

    Args:
        annotations: in the sample's coordinates.
        rect: the visible part, in the sample's coordinates.
        offset: ``(dx, dy)`` from sample to canvas coordinates.
        canvas_size: ``(H, W)`` of the canvas (for masks).

    Returns:
        New annotation dicts on the canvas; instances with nothing visible are dropped.
    """
    dx, dy = offset
    shift = np.array([dx, dy, dx, dy], dtype=np.float64)
    out = []
    for annotation in annotations:
        moved = dict(annotation)
        box = _clip_box(np.asarray(annotation["bbox"], dtype=np.float64), rect)
        moved["bbox"] = np.zeros(4) if box is None else box + shift
        if "segmentation" in annotation:
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, np.ndarray):
                x0, y0, x1, y1 = rect
                canvas = np.zeros(canvas_size, dtype=segmentation.dtype)
                canvas[y0 + dy : y1 + dy, x0 + dx : x1 + dx] = segmentation[y0:y1, x0:x1]
                moved["segmentation"] = canvas
            else:
                moved["segmentation"] = [
                    (p.reshape(-1, 2) + (dx, dy)).reshape(-1) for p in _clip_polygons(segmentation, rect)
                ]
        if not _is_empty(moved):
            out.append(moved)
    return out


def cover(annotations: List[Dict[str, Any]], rect: Rect, canvas_size: Tuple[int, int]) -> List[Dict[str, Any]]:
    """Annotations of a canvas once the rectangle ``rect`` is painted over.

    Polygons keep their pieces in the four bands around ``rect`` (above, below, left,
    right), masks are zeroed inside it, boxes without a mask become the tight box of
    ``box`` minus ``rect``. Instances with nothing left are dropped.
    """
    height, width = canvas_size
    x0, y0, x1, y1 = rect
    bands = [(0, 0, width, y0), (0, y1, width, height), (0, y0, x0, y1), (x1, y0, width, y1)]
    out = []
    for annotation in annotations:
        left = dict(annotation)
        box = np.asarray(annotation["bbox"], dtype=np.float64)
        parts = [b for b in (_clip_box(box, band) for band in bands) if b is not None]
        if parts:
            stacked = np.stack(parts)
            left["bbox"] = np.concatenate([stacked[:, :2].min(0), stacked[:, 2:].max(0)])
        else:
            left["bbox"] = np.zeros(4)
        if "segmentation" in annotation:
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, np.ndarray):
                segmentation = segmentation.copy()
                segmentation[y0:y1, x0:x1] = 0
                left["segmentation"] = segmentation
            else:
                left["segmentation"] = [p for band in bands for p in _clip_polygons(segmentation, band)]
        if not _is_empty(left):
            out.append(left)
    return out


def mixup(a: Sample, b: Sample, lam: float) -> Sample:
    """MixUp: ``lam * a + (1 - lam) * b`` on a canvas of the larger height and width,
    both images at the top-left corner (0 elsewhere); the instances of both.

    Args:
        lam: weight of ``a`` in [0, 1].
    """
    size = (max(a.size[0], b.size[0]), max(a.size[1], b.size[1]))
    mixed = np.zeros(tuple(size) + a.image.shape[2:], dtype=np.float64)
    for sample, weight in ((a, lam), (b, 1.0 - lam)):
        h, w = sample.size
        mixed[:h, :w] += weight * sample.image
    image = np.clip(np.round(mixed), 0, 255).astype(a.image.dtype)
    annotations = []
    for sample in (a, b):
        h, w = sample.size
        annotations += place(sample.annotations, (0, 0, w, h), (0, 0), size)
    return Sample(image, annotations)


def cutmix_rectangle(size: Tuple[int, int], lam: float, center: Tuple[int, int]) -> Rect:
    """The CutMix rectangle: sides ``int(H sqrt(1 - lam))`` and ``int(W sqrt(1 - lam))``
    around ``center = (cx, cy)``, cut at the image border (so it may cover less)."""
    height, width = size
    ratio = np.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    cx, cy = center
    return (
        int(np.clip(cx - half_w, 0, width)),
        int(np.clip(cy - half_h, 0, height)),
        int(np.clip(cx + half_w, 0, width)),
        int(np.clip(cy + half_h, 0, height)),
    )


def cutmix(a: Sample, b: Sample, rect: Rect) -> Sample:
    """CutMix: ``a`` with the rectangle ``rect`` taken from ``b`` (same size as ``a``).

    Raises:
        ValueError: the two samples differ in size.
    """
    if a.size != b.size:
        raise ValueError(f"CutMix needs samples of one size; got {a.size} and {b.size}.")
    x0, y0, x1, y1 = rect
    image = a.image.copy()
    image[y0:y1, x0:x1] = b.image[y0:y1, x0:x1]
    annotations = cover(a.annotations, rect, a.size) + place(b.annotations, rect, (0, 0), a.size)
    return Sample(image, annotations)


def mosaic_layout(
    canvas_size: Tuple[int, int], center: Tuple[int, int], sizes: Sequence[Tuple[int, int]]
) -> List[Tuple[Rect, Tuple[int, int]]]:
    """Where the four Mosaic samples go.

    Sample 0 has its bottom-right corner at ``center = (cx, cy)``, sample 1 its
    bottom-left, sample 2 its top-right, sample 3 its top-left; each is cut to its
    quadrant of the canvas.

    Returns:
        Per sample, ``(visible rect in the sample's coordinates, (dx, dy) offset to the
        canvas)``; the rect is empty (``x1 <= x0`` or ``y1 <= y0``) when nothing shows.
    """
    height, width = canvas_size
    cx, cy = center
    quadrants = [(0, 0, cx, cy), (cx, 0, width, cy), (0, cy, cx, height), (cx, cy, width, height)]
    layout = []
    for k, ((h, w), quadrant) in enumerate(zip(sizes, quadrants)):
        dx = cx - w if k in (0, 2) else cx
        dy = cy - h if k in (0, 1) else cy
        visible = (
            max(quadrant[0], dx), max(quadrant[1], dy), min(quadrant[2], dx + w), min(quadrant[3], dy + h)
        )
        rect = (visible[0] - dx, visible[1] - dy, visible[2] - dx, visible[3] - dy)
        layout.append((rect, (dx, dy)))
    return layout


def mosaic(samples: Sequence[Sample], canvas_size: Tuple[int, int], center: Tuple[int, int]) -> Sample:
    """Mosaic of four samples around ``center`` on a ``canvas_size`` canvas (see
    :func:`mosaic_layout`)."""
    if len(samples) != 4:
        raise ValueError(f"Mosaic needs 4 samples; got {len(samples)}.")
    first = samples[0].image
    image = np.zeros(tuple(canvas_size) + first.shape[2:], dtype=first.dtype)
    annotations = []
    for sample, (rect, (dx, dy)) in zip(samples, mosaic_layout(canvas_size, center, [s.size for s in samples])):
        x0, y0, x1, y1 = rect
        if x1 <= x0 or y1 <= y0:
            continue
        image[y0 + dy : y1 + dy, x0 + dx : x1 + dx] = sample.image[y0:y1, x0:x1]
        annotations += place(sample.annotations, rect, (dx, dy), canvas_size)
    return Sample(image, annotations)
