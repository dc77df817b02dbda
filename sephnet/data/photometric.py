"""Photometric distortion: random brightness, contrast, saturation and hue of one sample."""
from typing import Sequence

import cv2
import numpy as np

from sephnet.backend import transforms as T

__all__ = ["PhotometricDistortion", "distort_colors"]

# ITU-R BT.601 luma weights (R, G, B), the grey value of the saturation step
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def distort_colors(
    image: np.ndarray,
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    bgr: bool,
) -> np.ndarray:
    """Apply fixed colour changes to an ``(H, W, 3)`` image in [0, 255], in this order:

    1. brightness: ``x + brightness * 255``;
    2. contrast: ``m + contrast * (x - m)``, ``m`` the mean of each channel;
    3. saturation: ``g + saturation * (x - g)``, ``g`` the pixel's grey value
       (0.299 R + 0.587 G + 0.114 B);
    4. hue: the HSV hue turned by ``hue`` turns of the colour circle.

    Values are clipped to [0, 255] after each step (as on a uint8 image).

    Args:
        image: uint8 or float ``(H, W, 3)`` image.
        brightness, contrast, saturation, hue: the amounts (0, 1, 1, 0 change nothing).
        bgr: whether channels are in BGR order (detectron2's default ``INPUT.FORMAT``).

    Returns:
        An array of ``image``'s shape and dtype (uint8 values are rounded).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Photometric distortion needs an (H, W, 3) image; got shape {image.shape}.")
    rgb = image[:, :, ::-1] if bgr else image
    x = np.clip(rgb.astype(np.float32) + brightness * 255.0, 0, 255)
    mean = x.reshape(-1, 3).mean(axis=0)
    x = np.clip(mean + contrast * (x - mean), 0, 255)
    grey = (x @ _LUMA_RGB)[:, :, None]
    x = np.clip(grey + saturation * (x - grey), 0, 255)
    if hue:
        hsv = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2HSV)  # float: H in [0, 360)
        hsv[:, :, 0] = np.mod(hsv[:, :, 0] + hue * 360.0, 360.0)
        x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)
    out = x[:, :, ::-1] if bgr else x
    if image.dtype == np.uint8:
        return np.round(out).astype(np.uint8)
    return np.ascontiguousarray(out).astype(image.dtype)


class PhotometricDistortion(T.Augmentation):
    """With probability ``prob``, :func:`distort_colors` with random amounts.

    Draws (numpy's global RNG, in this order): the apply decision ``u < prob``; then
    ``brightness ~ U(-brightness_delta, brightness_delta)``, ``contrast ~
    U(*contrast_range)``, ``saturation ~ U(*saturation_range)``, ``hue ~ U(-hue_delta,
    hue_delta)``. Geometry is untouched: boxes and masks are unchanged.
    """

    def __init__(
        self,
        prob: float,
        *,
        brightness_delta: float,
        contrast_range: Sequence[float],
        saturation_range: Sequence[float],
        hue_delta: float,
        image_format: str,
    ):
        """
        Args:
            prob: probability of distorting an image.
            brightness_delta: the largest brightness change, as a fraction of 255.
            contrast_range, saturation_range: ``(low, high)`` factors.
            hue_delta: the largest hue turn, as a fraction of the colour circle.
            image_format: the images' detectron2 format ("BGR" or "RGB").
        """
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(
                f"Photometric distortion needs INPUT.FORMAT 'BGR' or 'RGB'; got {image_format!r}."
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray):
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        amounts = dict(
            brightness=np.random.uniform(-self.brightness_delta, self.brightness_delta),
            contrast=np.random.uniform(*self.contrast_range),
            saturation=np.random.uniform(*self.saturation_range),
            hue=np.random.uniform(-self.hue_delta, self.hue_delta),
        )
        bgr = self.image_format == "BGR"
        return T.ColorTransform(lambda img: distort_colors(img, bgr=bgr, **amounts))
