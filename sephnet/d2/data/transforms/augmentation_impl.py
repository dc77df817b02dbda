"""Built-in augmentations (detectron2.data.transforms.augmentation_impl).

All sample their random choices from numpy's global RNG in the same order and with
the same calls as detectron2 v0.6, so a seeded run draws the same sizes and flips.
"""
import sys
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from fvcore.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from PIL import Image

from .augmentation import Augmentation, _transform_to_aug
from .transform import ExtentTransform, ResizeTransform, RotationTransform

__all__ = [
    "FixedSizeCrop",
    "RandomApply",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomExtent",
    "RandomFlip",
    "RandomSaturation",
    "RandomLighting",
    "RandomRotation",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
    "RandomCrop_CategoryAreaConstraint",
]


class _ArgumentError(AssertionError, ValueError):
    """A bad constructor argument where detectron2 asserts: an ``AssertionError`` as
    there, and a ``ValueError`` (the house convention)."""


class RandomApply(Augmentation):
    """Apply a wrapped augmentation/transform with probability ``prob``, else do nothing."""

    def __init__(self, tfm_or_aug: Union[Transform, Augmentation], prob: float = 0.5):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise _ArgumentError(f"RandomApply(prob=) must be in [0, 1]; got {prob}.")
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

    @torch.jit.unused  # scripting a caller of get_output_shape compiles only that
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

    @torch.jit.unused  # no annotations: TorchScript would compile their types
    def get_transform(self, image):
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


class RandomCrop_CategoryAreaConstraint(Augmentation):
    """A :class:`RandomCrop` whose window avoids being dominated by one semantic class.

    With ``single_category_max_area < 1``, up to 10 windows are drawn; the first one where
    at least two labels of ``sem_seg`` are present (``ignored_category`` not counted) and
    the most frequent covers less than that fraction of the counted pixels is used, else
    the 10th window. With ``single_category_max_area >= 1`` it is a plain RandomCrop.
    """

    def __init__(
        self,
        crop_type: str,
        crop_size,
        single_category_max_area: float = 1.0,
        ignored_category: Optional[int] = None,
    ):
        """
        Args:
            crop_type, crop_size: as in :class:`RandomCrop`.
            single_category_max_area: largest fraction of the window one label may cover.
            ignored_category: a label (e.g. the ignore value) exempt from the constraint.
        """
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self._init(locals())

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        h, w = sem_seg.shape
        for _ in range(10):
            crop_h, crop_w = self.crop_aug.get_crop_size((h, w))
            y0 = np.random.randint(h - crop_h + 1)
            x0 = np.random.randint(w - crop_w + 1)
            window = sem_seg[y0 : y0 + crop_h, x0 : x0 + crop_w]
            labels, counts = np.unique(window, return_counts=True)
            if self.ignored_category is not None:
                counts = counts[labels != self.ignored_category]
            if len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area:
                break
        return CropTransform(x0, y0, crop_w, crop_h)


class RandomExtent(Augmentation):
    """Cut a random, possibly out-of-image rectangle and keep it at its own size.

    The rectangle starts as the image, is scaled about the image centre by
    ``s ~ U(scale_range)``, then shifted by ``(W * shift_range[0] * (u - 0.5),
    H * shift_range[1] * (v - 0.5))`` with ``u, v ~ U(0, 1)``. Outside pixels are black.
    """

    def __init__(self, scale_range: Tuple[float, float], shift_range: Tuple[float, float]):
        """
        Args:
            scale_range: ``(low, high)`` of the size factor of the rectangle.
            shift_range: ``(x, y)`` shift amplitudes, as fractions of the image size.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        img_h, img_w = image.shape[:2]
        half = np.array([img_w, img_h, img_w, img_h], dtype=np.float64) / 2.0
        rect = np.array([-1.0, -1.0, 1.0, 1.0]) * half * np.random.uniform(*self.scale_range)
        rect[0::2] += self.shift_range[0] * img_w * (np.random.rand() - 0.5)
        rect[1::2] += self.shift_range[1] * img_h * (np.random.rand() - 0.5)
        rect += half  # from centre-origin to corner-origin coordinates
        return ExtentTransform(
            src_rect=tuple(rect),
            output_size=(int(rect[3] - rect[1]), int(rect[2] - rect[0])),
        )


class RandomRotation(Augmentation):
    """Rotate by a random angle (degrees, counter-clockwise); see :class:`RotationTransform`."""

    def __init__(
        self,
        angle,
        expand: bool = True,
        center=None,
        sample_style: str = "range",
        interp: Optional[int] = None,
    ):
        """
        Args:
            angle: ``[min, max]`` degrees (``"range"``) or the angles to choose from
                (``"choice"``); a number means that angle.
            expand: grow the output to hold the whole rotated image.
            center: relative ``[[min_x, min_y], [max_x, max_y]]`` (``"range"``) or the
                relative ``(x, y)`` centres to choose from (``"choice"``); ``(0, 0)`` is the
                top-left corner, ``(1, 1)`` the bottom-right. None: the image centre. No
                effect with ``expand``.
            sample_style: ``"range"`` or ``"choice"``.
            interp: OpenCV interpolation flag.
        """
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(
                f"RandomRotation(sample_style=) must be 'range' or 'choice'; got {sample_style!r}."
            )
        self.is_range = sample_style == "range"
        if isinstance(angle, (float, int)):
            angle = (angle, angle)
        if center is not None and isinstance(center[0], (float, int)):
            center = (center, center)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        center = None
        if self.is_range:
            angle = np.random.uniform(self.angle[0], self.angle[1])
            if self.center is not None:
                low, high = self.center
                center = (np.random.uniform(low[0], high[0]), np.random.uniform(low[1], high[1]))
        else:
            angle = np.random.choice(self.angle)
            if self.center is not None:
                center = self.center[np.random.randint(len(self.center))]
        if center is not None:
            center = (w * center[0], h * center[1])
        if angle % 360 == 0:
            return NoOpTransform()
        return RotationTransform(h, w, angle, expand=self.expand, center=center, interp=self.interp)


class FixedSizeCrop(Augmentation):
    """Crop to ``crop_size`` where the image is larger, pad right/bottom where smaller.

    The crop offset is ``round(u * max(input - crop, 0))`` per side with one
    ``u ~ U(0, 1)`` shared by both sides. With ``pad``, images smaller than ``crop_size``
    are padded with ``pad_value`` (masks with 0) to exactly ``crop_size``. Used after
    :class:`ResizeScale` for large-scale jitter.
    """

    def __init__(self, crop_size: Tuple[int, int], pad: bool = True, pad_value: float = 128.0):
        """
        Args:
            crop_size: output ``(h, w)``.
            pad: pad smaller images up to ``crop_size``.
            pad_value: image value of the padding.
        """
        super().__init__()
        self._init(locals())

    def _get_crop(self, image: np.ndarray) -> Transform:
        in_hw = np.asarray(image.shape[:2])
        slack = np.maximum(in_hw - np.asarray(self.crop_size), 0)
        y0, x0 = np.round(slack * np.random.uniform(0.0, 1.0)).astype(int)
        return CropTransform(x0, y0, self.crop_size[1], self.crop_size[0], in_hw[1], in_hw[0])

    def _get_pad(self, image: np.ndarray) -> Transform:
        in_hw = np.asarray(image.shape[:2])
        out_hw = np.asarray(self.crop_size)
        pad_h, pad_w = np.maximum(out_hw - in_hw, 0)
        kept_h, kept_w = np.minimum(in_hw, out_hw)
        return PadTransform(0, 0, pad_w, pad_h, kept_w, kept_h, self.pad_value)

    def get_transform(self, image: np.ndarray) -> TransformList:
        transforms = [self._get_crop(image)]
        if self.pad:
            transforms.append(self._get_pad(image))
        return TransformList(transforms)


class RandomContrast(Augmentation):
    """Blend with the image mean: ``out = w * img + (1 - w) * mean``, ``w ~ U(min, max)``
    (w < 1 lowers, w > 1 raises the contrast)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=image.mean(), src_weight=1 - w, dst_weight=w)


class RandomBrightness(Augmentation):
    """Scale intensities: ``out = w * img``, ``w ~ U(min, max)`` (a blend with black)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=0, src_weight=1 - w, dst_weight=w)


class RandomSaturation(Augmentation):
    """Blend an RGB image with its grey version (weights 0.299, 0.587, 0.114):
    ``out = w * img + (1 - w) * grey``, ``w ~ U(min, max)``."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.shape[-1] != 3:
            raise ValueError(
                f"RandomSaturation needs a 3-channel RGB image; got shape {image.shape}."
            )
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        grey = image.dot([0.299, 0.587, 0.114])[:, :, None]
        return BlendTransform(src_image=grey, src_weight=1 - w, dst_weight=w)


class RandomLighting(Augmentation):
    """AlexNet's PCA lighting noise on an RGB image: add ``V (a * lambda)`` to every
    pixel, with ImageNet's RGB eigenvectors ``V`` / eigenvalues ``lambda`` and
    ``a ~ N(0, scale^2)`` per component."""

    def __init__(self, scale: float):
        """
        Args:
            scale: standard deviation of the component weights ``a``.
        """
        super().__init__()
        self._init(locals())
        self.eigen_vecs = np.array(
            [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
        )
        self.eigen_vals = np.array([0.2175, 0.0188, 0.0045])

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.shape[-1] != 3:
            raise ValueError(f"RandomLighting needs a 3-channel RGB image; got shape {image.shape}.")
        weights = np.random.normal(scale=self.scale, size=3)
        shift = self.eigen_vecs.dot(weights * self.eigen_vals)
        return BlendTransform(src_image=shift, src_weight=1.0, dst_weight=1.0)
