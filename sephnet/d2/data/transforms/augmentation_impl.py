"""Built-in augmentations (detectron2.data.transforms.augmentation_impl).

All sample their random choices from numpy's global RNG in the same order and with
the same calls as detectron2 v0.6, so a seeded run draws the same sizes and flips.
"""
import sys
from typing import Sequence, Tuple, Union

import numpy as np
from fvcore.transforms.transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    Transform,
    VFlipTransform,
)
from PIL import Image

from .augmentation import Augmentation, _transform_to_aug
from .transform import ResizeTransform

__all__ = [
    "RandomApply",
    "RandomCrop",
    "RandomFlip",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
]


class RandomApply(Augmentation):
    """Apply a wrapped augmentation/transform with probability ``prob``, else do nothing."""

    def __init__(self, tfm_or_aug: Union[Transform, Augmentation], prob: float = 0.5):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply(prob=) must be in [0, 1]; got {prob}.")
        self.aug = _transform_to_aug(tfm_or_aug)
        self.prob = prob

    def get_transform(self, *args) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()


class RandomFlip(Augmentation):
    """Flip horizontally (or vertically) with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        """
        Args:
            prob: probability of flipping.
            horizontal, vertical: which flip; exactly one must be True.
        """
        super().__init__()
        if horizontal and vertical:
            raise ValueError(
                "RandomFlip cannot flip both horizontally and vertically; use two RandomFlip."
            )
        if not horizontal and not vertical:
            raise ValueError("RandomFlip needs horizontal=True or vertical=True.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class Resize(Augmentation):
    """Resize to a fixed ``(h, w)`` (an int means a square)."""

    def __init__(self, shape: Union[int, Sequence[int]], interp: int = Image.BILINEAR):
        if isinstance(shape, int):
            shape = (shape, shape)
        shape = tuple(shape)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        return ResizeTransform(
            image.shape[0], image.shape[1], self.shape[0], self.shape[1], self.interp
        )


class ResizeShortestEdge(Augmentation):
    """Scale the short edge to a sampled length, keeping the aspect ratio.

    If the long edge would then exceed ``max_size``, the image is scaled down further so
    that the long edge equals ``max_size``. The output size is rounded half-up (see
    :meth:`get_output_shape`).
    """

    def __init__(
        self,
        short_edge_length: Union[int, Sequence[int]],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = Image.BILINEAR,
    ):
        """
        Args:
            short_edge_length: with ``sample_style="range"``, ``[min, max]`` from which an
                integer is drawn uniformly (both ends included); with ``"choice"``, the
                lengths to choose from. An int means that single length.
            max_size: the longest edge allowed after resizing.
            sample_style: ``"range"`` or ``"choice"``.
            interp: PIL resampling filter.
        """
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(
                f"ResizeShortestEdge(sample_style=) must be 'range' or 'choice'; "
                f"got {sample_style!r}."
            )
        self.is_range = sample_style == "range"
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(
                "ResizeShortestEdge with sample_style='range' needs two values [min, max] "
                f"for short_edge_length; got {short_edge_length}."
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(
        oldh: int, oldw: int, short_edge_length: int, max_size: int
    ) -> Tuple[int, int]:
        """Output ``(new_h, new_w)`` for an ``(oldh, oldw)`` input.

        The short side becomes ``short_edge_length`` (the long side scales with it);
        if the long side then exceeds ``max_size`` both are scaled by
        ``max_size / long side``. Each side is finally rounded as ``int(x + 0.5)``.
        """
        scale = short_edge_length * 1.0 / min(oldh, oldw)
        if oldh < oldw:
            new_h, new_w = short_edge_length * 1.0, scale * oldw
        else:
            new_h, new_w = scale * oldh, short_edge_length * 1.0
        longest = max(new_h, new_w)
        if longest > max_size:
            shrink = max_size * 1.0 / longest
            new_h, new_w = new_h * shrink, new_w * shrink
        return int(new_h + 0.5), int(new_w + 0.5)


class ResizeScale(Augmentation):
    """Resize so the image fits in ``target * s``, ``s ~ U(min_scale, max_scale)``."""

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        target_height: int,
        target_width: int,
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        self._init(locals())

    def _get_resize(self, image: np.ndarray, scale: float) -> Transform:
        in_h, in_w = image.shape[:2]
        target_h, target_w = self.target_height * scale, self.target_width * scale
        ratio = np.minimum(target_h / in_h, target_w / in_w)
        out_h, out_w = np.round(np.multiply((in_h, in_w), ratio)).astype(int)
        return ResizeTransform(in_h, in_w, out_h, out_w, self.interp)

    def get_transform(self, image: np.ndarray) -> Transform:
        return self._get_resize(image, np.random.uniform(self.min_scale, self.max_scale))


class RandomCrop(Augmentation):
    """Crop a random window whose size is given by ``crop_type`` / ``crop_size``.

    * ``"relative"``: ``(H * crop_size[0], W * crop_size[1])``, values in (0, 1];
    * ``"relative_range"``: each relative size drawn uniformly in ``[crop_size[i], 1]``;
    * ``"absolute"``: ``(crop_size[0], crop_size[1])`` pixels (clamped to the image);
    * ``"absolute_range"``: h and w drawn as integers in
      ``[min(H or W, crop_size[0]), min(H or W, crop_size[1])]``.
    """

    _TYPES = ("relative_range", "relative", "absolute", "absolute_range")

    def __init__(self, crop_type: str, crop_size):
        super().__init__()
        if crop_type not in self._TYPES:
            raise ValueError(f"RandomCrop(crop_type=) must be one of {self._TYPES}; got {crop_type!r}.")
        if crop_type == "absolute_range" and crop_size[0] > crop_size[1]:
            raise ValueError(
                f"RandomCrop absolute_range needs crop_size[0] <= crop_size[1]; got {crop_size}."
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        crop_h, crop_w = self.get_crop_size((h, w))
        y0 = np.random.randint(h - crop_h + 1)
        x0 = np.random.randint(w - crop_w + 1)
        return CropTransform(x0, y0, crop_w, crop_h)

    def get_crop_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """The ``(crop_h, crop_w)`` in pixels for an image of ``(h, w)``."""
        h, w = image_size
        if self.crop_type == "relative":
            rel_h, rel_w = self.crop_size
            return int(h * rel_h + 0.5), int(w * rel_w + 0.5)
        if self.crop_type == "relative_range":
            low = np.asarray(self.crop_size, dtype=np.float32)
            rel_h, rel_w = low + np.random.rand(2) * (1 - low)
            return int(h * rel_h + 0.5), int(w * rel_w + 0.5)
        if self.crop_type == "absolute":
            return min(self.crop_size[0], h), min(self.crop_size[1], w)
        crop_h = np.random.randint(min(h, self.crop_size[0]), min(h, self.crop_size[1]) + 1)
        crop_w = np.random.randint(min(w, self.crop_size[0]), min(w, self.crop_size[1]) + 1)
        return crop_h, crop_w
