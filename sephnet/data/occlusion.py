"""Occlusion augmentations on the final training image: random erasing and CutOut.

Both only change pixels: the boxes and masks of occluded objects are kept (the object is
hidden, not removed), so the returned transforms leave coordinates and masks unchanged.
"""
import math
from typing import Sequence

import numpy as np

from sephnet.backend import transforms as T

__all__ = ["RandomErase", "CutOut", "fill_rectangles"]


def fill_rectangles(image: np.ndarray, rects: Sequence[Sequence[int]], values: Sequence) -> np.ndarray:
    """A copy of ``image`` with each integer XYXY rectangle (pixel edges, already inside
    the image) set to its value (a scalar or an array broadcastable to the rectangle)."""
    out = image.copy()
    for (x0, y0, x1, y1), value in zip(rects, values):
        out[y0:y1, x0:x1] = value
    return out


class RandomErase(T.Augmentation):
    """Random erasing (Zhong et al. 2017): with probability ``prob``, one rectangle becomes
    uniform noise in [0, 255].

    Draws: the apply decision; then up to 10 tries of an area fraction ``s ~
    U(area_range)`` and an aspect ratio ``r`` (h / w) log-uniform in ``aspect_range``,
    giving ``h = round(sqrt(s A r))``, ``w = round(sqrt(s A / r))``; the first try that
    fits in the image is placed uniformly (top-left corner) and filled with noise.
    When no try fits, nothing is erased.
    """

    def __init__(self, prob: float, *, area_range: Sequence[float], aspect_range: Sequence[float]):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray):
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        height, width = image.shape[:2]
        log_low, log_high = math.log(self.aspect_range[0]), math.log(self.aspect_range[1])
        for _ in range(10):
            area = np.random.uniform(*self.area_range) * height * width
            aspect = math.exp(np.random.uniform(log_low, log_high))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < h <= height and 0 < w <= width:
                y0 = np.random.randint(height - h + 1)
                x0 = np.random.randint(width - w + 1)
                noise = np.random.randint(0, 256, size=(h, w) + image.shape[2:]).astype(image.dtype)
                rect = (x0, y0, x0 + w, y0 + h)
                return T.ColorTransform(lambda img: fill_rectangles(img, [rect], [noise]))
        return T.NoOpTransform()


class CutOut(T.Augmentation):
    """CutOut (DeVries & Taylor 2017): with probability ``prob``, ``num_holes`` squares of
    side ``size`` are set to 0.

    Each square's centre pixel is uniform over the image (x then y drawn per hole); the
    square spans ``[c - size // 2, c - size // 2 + size)`` on each axis, cut at the image
    border.
    """

    def __init__(self, prob: float, *, num_holes: int, size: int):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray):
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        height, width = image.shape[:2]
        rects = []
        for _ in range(self.num_holes):
            cx, cy = np.random.randint(width), np.random.randint(height)
            x0, y0 = cx - self.size // 2, cy - self.size // 2
            rects.append((max(x0, 0), max(y0, 0), min(x0 + self.size, width), min(y0 + self.size, height)))
        return T.ColorTransform(lambda img: fill_rectangles(img, rects, [0] * len(rects)))
