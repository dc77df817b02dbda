"""Deterministic transforms added on top of fvcore's (detectron2.data.transforms.transform).

A :class:`~fvcore.transforms.transform.Transform` is a fixed geometric/photometric
operation that can be applied consistently to an image (``apply_image``), point
coordinates (``apply_coords``, Nx2 float XY in absolute pixels), boxes (``apply_box``,
Nx4 XYXY_ABS), polygons and segmentation masks.
"""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import Transform
from PIL import Image

__all__ = ["ResizeTransform"]

# PIL resampling filter -> torch.nn.functional.interpolate mode, for non-uint8 images.
_PIL_TO_TORCH_MODE = {
    Image.NEAREST: "nearest",
    Image.BILINEAR: "bilinear",
    Image.BICUBIC: "bicubic",
}


class ResizeTransform(Transform):
    """Resize an ``(h, w)`` image to ``(new_h, new_w)``.

    uint8 images are resized by PIL with the ``interp`` filter (default bilinear);
    float images by ``torch.nn.functional.interpolate`` in the equivalent mode
    (``align_corners=False``). Segmentation masks always use nearest neighbour.
    Coordinates are scaled by ``new_w / w`` and ``new_h / h``.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: Optional[int] = None):
        """
        Args:
            h, w: input image size in pixels.
            new_h, new_w: output image size in pixels.
            interp: a PIL resampling filter (``PIL.Image.BILINEAR`` when None).
        """
        super().__init__()
        if interp is None:
            interp = Image.BILINEAR
        self._set_attributes(
            {"h": h, "w": w, "new_h": new_h, "new_w": new_w, "interp": interp}
        )

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        """Resize an ``(h, w)``, ``(h, w, C)`` (or ``(h, w, C, ...)``) array.

        Raises:
            ValueError: the image is not ``(h, w)`` in its first two dimensions.
        """
        if tuple(img.shape[:2]) != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform expects an image of size (h, w)=({self.h}, {self.w}); "
                f"got shape {tuple(img.shape)}."
            )
        if img.ndim > 4:
            raise ValueError(f"ResizeTransform supports at most 4 dims; got {img.ndim}.")
        method = self.interp if interp is None else interp
        if img.dtype == np.uint8:
            return self._resize_pil(img, method)
        return self._resize_torch(img, method)

    def _resize_pil(self, img: np.ndarray, method: int) -> np.ndarray:
        single_channel = img.ndim > 2 and img.shape[2] == 1
        pil = Image.fromarray(img[:, :, 0] if single_channel else img)
        out = np.asarray(pil.resize((self.new_w, self.new_h), method))
        return out[:, :, None] if single_channel else out

    def _resize_torch(self, img: np.ndarray, method: int) -> np.ndarray:
        if method not in _PIL_TO_TORCH_MODE:
            raise ValueError(
                f"ResizeTransform on non-uint8 images supports interp in "
                f"{sorted(_PIL_TO_TORCH_MODE)} (PIL NEAREST/BILINEAR/BICUBIC); got {method}."
            )
        mode = _PIL_TO_TORCH_MODE[method]
        tensor = torch.from_numpy(np.ascontiguousarray(img))
        shape = list(tensor.shape)
        # (h, w, rest...) -> (1 or rest[0], 1 or rest[1], h, w) as an NCHW batch
        shape_4d = shape[:2] + [1] * (4 - len(shape)) + shape[2:]
        nchw = tensor.view(shape_4d).permute(2, 3, 0, 1)
        out = F.interpolate(
            nchw,
            (self.new_h, self.new_w),
            mode=mode,
            align_corners=None if mode == "nearest" else False,
        )
        shape[:2] = [self.new_h, self.new_w]
        return out.permute(2, 3, 0, 1).reshape(shape).numpy()

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Scale Nx2 XY coordinates (in place) to the resized image."""
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Resize a label/mask image with nearest-neighbour sampling."""
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> "ResizeTransform":
        """The resize back to the original size."""
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)

