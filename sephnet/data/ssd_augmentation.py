"""SSD's geometric data augmentation (Liu et al. 2016, section 2.2 "Data augmentation"; the
"zoom out" expansion of section 3.6), as detectron2 augmentations and transforms.

* :class:`RandomExpand`: with probability ``prob``, place the image at a random position
  of a canvas ``r`` times its size (``r ~ U(1, max_ratio)``) filled with the mean pixel
  (:class:`ExpandTransform`); objects become smaller.
* :class:`MinIoURandomCrop`: draw one of "keep the image", "a patch whose IoU with every
  box is at least m" for each ``m`` of ``min_ious``, and "any patch"; a patch has sides in
  ``[min_size, 1]`` of the image's, an aspect ratio h / w in [1/2, 2], and at least one
  box centre strictly inside it (mmdetection's ``MinIoURandomCrop``). It returns a
  ``CropTransform``; dropping the boxes whose centre falls outside is the mapper's job
  (:class:`~sephnet.data.ssd_mapper.SSDDatasetMapper`), since a transform cannot drop
  instances.

Randomness comes from numpy's global RNG (seeded per worker by detectron2's loader, per
stream position by the core's resumable loader), so seeded runs repeat and resume exactly.
"""
from typing import Optional, Sequence, Tuple

import numpy as np

from sephnet.backend import transforms as T

__all__ = ["ExpandTransform", "RandomExpand", "MinIoURandomCrop", "box_iou_with_patch", "centres_inside"]


class ExpandTransform(T.Transform):
    """Place an ``(h, w)`` image at ``(left, top)`` of an ``(out_h, out_w)`` canvas of ``fill``."""

    def __init__(self, *, out_h: int, out_w: int, left: int, top: int, fill: Sequence[float]):
        """
        Args:
            out_h, out_w: canvas size in pixels (at least the image's plus the offset).
            left, top: where the image's top-left pixel lands.
            fill: one value per image channel for the uncovered canvas.
        """
        super().__init__()
        self._set_attributes(dict(out_h=out_h, out_w=out_w, left=left, top=top, fill=tuple(fill)))

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.top + h > self.out_h or self.left + w > self.out_w:
            raise ValueError(
                f"ExpandTransform: a {h}x{w} image at ({self.left}, {self.top}) does not fit a "
                f"{self.out_h}x{self.out_w} canvas."
            )
        shape = (self.out_h, self.out_w) + img.shape[2:]
        fill = np.asarray(self.fill if img.ndim == 3 else self.fill[:1], dtype=np.float64)
        if np.issubdtype(img.dtype, np.integer):
            fill = np.round(fill)
        canvas = np.empty(shape, dtype=img.dtype)
        canvas[...] = fill.astype(img.dtype)
        canvas[self.top : self.top + h, self.left : self.left + w] = img
        return canvas

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).copy()
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Label maps are padded with 0."""
        h, w = segmentation.shape[:2]
        canvas = np.zeros((self.out_h, self.out_w) + segmentation.shape[2:], dtype=segmentation.dtype)
        canvas[self.top : self.top + h, self.left : self.left + w] = segmentation
        return canvas


class RandomExpand(T.Augmentation):
    """SSD's "zoom out": :class:`ExpandTransform` with probability ``prob``.

    Draws (in order): ``u < prob``; then ``r ~ U(1, max_ratio)``, ``left ~ U(0, r w - w)``,
    ``top ~ U(0, r h - h)`` (canvas ``int(r h) x int(r w)``, offsets truncated to ints).
    """

    def __init__(self, prob: float, max_ratio: float, fill: Sequence[float]):
        """
        Args:
            prob: probability of expanding, in [0, 1].
            max_ratio: largest canvas / image side ratio (>= 1).
            fill: the canvas value per channel (the mean pixel, in the image's channel order).
        """
        super().__init__()
        if not 0.0 <= prob <= 1.0 or max_ratio < 1.0:
            raise ValueError(
                f"RandomExpand needs prob in [0, 1] and max_ratio >= 1; got {prob}, {max_ratio}."
            )
        self._init(dict(prob=prob, max_ratio=max_ratio, fill=tuple(fill)))

    def get_transform(self, image: np.ndarray) -> T.Transform:
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        ratio = np.random.uniform(1.0, self.max_ratio)
        out_h, out_w = int(h * ratio), int(w * ratio)
        left = int(np.random.uniform(0, out_w - w))
        top = int(np.random.uniform(0, out_h - h))
        return ExpandTransform(out_h=out_h, out_w=out_w, left=left, top=top, fill=self.fill)


def box_iou_with_patch(boxes: np.ndarray, patch: Tuple[float, float, float, float]) -> np.ndarray:
    """IoU of every ``(N, 4)`` XYXY box with one XYXY patch; ``(N,)`` float64."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = patch
    iw = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    inter = iw * ih
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (x1 - x0) * (y1 - y0) - inter
    return inter / np.maximum(union, 1e-12)


def centres_inside(boxes: np.ndarray, patch: Tuple[float, float, float, float]) -> np.ndarray:
    """``(N,)`` bool: whether each XYXY box's centre lies strictly inside the XYXY patch."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0, x1, y1 = patch
    return (cx > x0) & (cy > y0) & (cx < x1) & (cy < y1)


class MinIoURandomCrop(T.Augmentation):
    """SSD's random patch (see the module docstring).

    Draws (in order) a mode uniformly from ``[keep] + min_ious + [any]``; for a patch mode, up
    to ``max_trials`` candidates, each ``w' ~ U(min_size w, w)``, ``h' ~ U(min_size h, h)``
    (rejected unless 1/2 <= h'/w' <= 2), ``left ~ U(0, w - w')``, ``top ~ U(0, h - h')``,
    truncated to ints; the first candidate meeting the mode's conditions is the crop. When
    none does, a new mode is drawn; after ``max_modes`` modes without a crop the image is kept.
    """

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        min_size: float = 0.3,
        *,
        max_trials: int = 50,
        max_modes: int = 20,
    ):
        """
        Args:
            min_ious: the minimum-IoU modes, each in [0, 1].
            min_size: smallest patch side as a fraction of the image's, in (0, 1].
            max_trials: candidates per mode.
            max_modes: modes drawn before giving up (keeping the whole image).
        """
        super().__init__()
        if not 0.0 < min_size <= 1.0:
            raise ValueError(f"MinIoURandomCrop min_size must be in (0, 1]; got {min_size}.")
        self._init(
            dict(min_ious=tuple(min_ious), min_size=min_size, max_trials=max_trials, max_modes=max_modes)
        )

    def get_transform(self, image: np.ndarray, boxes: Optional[np.ndarray]) -> T.Transform:
        h, w = image.shape[:2]
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        modes = [None] + list(self.min_ious) + [0.0]
        for _ in range(self.max_modes):
            min_iou = modes[np.random.randint(len(modes))]
            if min_iou is None:
                return T.NoOpTransform()
            patch = self._try_patches(h, w, boxes, min_iou)
            if patch is not None:
                x0, y0, x1, y1 = patch
                return T.CropTransform(x0, y0, x1 - x0, y1 - y0)
        return T.NoOpTransform()

    def _try_patches(
        self, h: int, w: int, boxes: np.ndarray, min_iou: float
    ) -> Optional[Tuple[int, int, int, int]]:
        """The first of ``max_trials`` candidate patches meeting ``min_iou``, or None."""
        for _ in range(self.max_trials):
            new_w = np.random.uniform(self.min_size * w, w)
            new_h = np.random.uniform(self.min_size * h, h)
            if not 0.5 <= new_h / new_w <= 2.0:
                continue
            left = np.random.uniform(0, w - new_w)
            top = np.random.uniform(0, h - new_h)
            patch = (int(left), int(top), int(left + new_w), int(top + new_h))
            if patch[2] <= patch[0] or patch[3] <= patch[1]:
                continue
            if len(boxes):
                if box_iou_with_patch(boxes, patch).min() < min_iou:
                    continue
                if not centres_inside(boxes, patch).any():
                    continue
            return patch
        return None
