"""Deterministic transforms added on top of fvcore's (detectron2.data.transforms.transform).

A :class:`~fvcore.transforms.transform.Transform` is a fixed geometric/photometric
operation that can be applied consistently to an image (``apply_image``), point
coordinates (``apply_coords``, Nx2 float XY in absolute pixels), boxes (``apply_box``,
Nx4 XYXY_ABS), polygons and segmentation masks.
"""
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    Transform,
    TransformList,
)
from PIL import Image

__all__ = [
    "ExtentTransform",
    "ResizeTransform",
    "RotationTransform",
    "ColorTransform",
    "PILColorTransform",
]

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



class ExtentTransform(Transform):
    """Take the rectangle ``src_rect`` of the input and scale it to ``output_size``.

    ``src_rect = (x0, y0, x1, y1)`` is in input pixel coordinates and may reach outside
    the image; pixels there take the value ``fill``. The mapping is the affine one sending
    the rectangle's centre to the output's centre and scaling by ``(w / (x1 - x0),
    h / (y1 - y0))`` (PIL's ``Image.EXTENT`` transform for the pixels).
    """

    def __init__(
        self,
        src_rect: Sequence[float],
        output_size: Tuple[int, int],
        interp: int = Image.BILINEAR,
        fill: int = 0,
    ):
        """
        Args:
            src_rect: ``(x0, y0, x1, y1)`` in input pixels.
            output_size: ``(h, w)`` of the output image.
            interp: PIL resampling filter for images.
            fill: value of output pixels whose source lies outside the input.
        """
        super().__init__()
        self._set_attributes(
            {"src_rect": src_rect, "output_size": output_size, "interp": interp, "fill": fill}
        )

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        """The ``(h, w[, C])`` extent of an ``(H, W[, C])`` uint8 image."""
        out_h, out_w = self.output_size
        single_channel = img.ndim == 3 and img.shape[2] == 1
        pil = Image.fromarray(img[:, :, 0] if single_channel else img)
        pil = pil.transform(
            size=(out_w, out_h),
            method=Image.EXTENT,
            data=tuple(self.src_rect),
            resample=interp if interp else self.interp,
            fill=self.fill,
        )
        out = np.asarray(pil)
        return out[:, :, None] if single_channel else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Map Nx2 XY input coordinates to the output image (float32)."""
        out_h, out_w = self.output_size
        x0, y0, x1, y1 = self.src_rect
        scale = np.array([out_w / (x1 - x0), out_h / (y1 - y0)], dtype=np.float64)
        rect_center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
        out_center = np.array([out_w / 2.0, out_h / 2.0])
        mapped = (np.asarray(coords, dtype=np.float64) - rect_center) * scale + out_center
        return mapped.astype(np.float32)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """The extent of a label image, sampled with nearest neighbour."""
        return self.apply_image(segmentation, interp=Image.NEAREST)


class RotationTransform(Transform):
    """Rotate an ``(h, w)`` image by ``angle`` degrees counter-clockwise.

    With ``expand`` the output is the ``(bound_h, bound_w)`` box holding the whole rotated
    image (sides ``rint(h |sin| + w |cos|)`` and ``rint(h |cos| + w |sin|)``), the image
    centre going to the output centre; otherwise the output keeps ``(h, w)`` and the image
    turns around ``center`` (default: the image centre), corners being cut off. Pixels
    are warped by OpenCV (``interp``, default ``cv2.INTER_LINEAR``; masks nearest);
    coordinates by the same affine map in continuous pixel coordinates (the corner of the
    image is (0, 0), pixel centres are at +0.5).
    """

    def __init__(
        self,
        h: int,
        w: int,
        angle: float,
        expand: bool = True,
        center: Optional[Sequence[float]] = None,
        interp: Optional[int] = None,
    ):
        """
        Args:
            h, w: input image size.
            angle: degrees, counter-clockwise.
            expand: grow the output to hold the whole rotated image.
            center: ``(x, y)`` rotation centre in pixels (None: the image centre). With
                ``expand`` only the angle matters: the result is re-centred.
            interp: OpenCV interpolation flag for images.
        """
        super().__init__()
        image_center = np.array((w / 2.0, h / 2.0))
        center = image_center if center is None else np.asarray(center, dtype=np.float64)
        interp = cv2.INTER_LINEAR if interp is None else interp
        radians = np.deg2rad(angle)
        abs_cos, abs_sin = abs(np.cos(radians)), abs(np.sin(radians))
        if expand:
            bound_w, bound_h = np.rint([h * abs_sin + w * abs_cos, h * abs_cos + w * abs_sin]).astype(int)
        else:
            bound_w, bound_h = w, h
        self._set_attributes(
            {
                "h": h, "w": w, "angle": angle, "expand": expand, "center": center,
                "interp": interp, "image_center": image_center,
                "bound_w": int(bound_w), "bound_h": int(bound_h),
            }
        )
        self.rm_coords = self.create_rotation_matrix()
        self.rm_image = self.create_rotation_matrix(offset=-0.5)

    def create_rotation_matrix(self, offset: float = 0) -> np.ndarray:
        """The 2x3 affine matrix of the rotation.

        Args:
            offset: 0 for continuous coordinates; -0.5 for pixel indices (what
                ``cv2.warpAffine`` uses: pixel ``i`` has its centre at ``i + 0.5``).
        """
        matrix = cv2.getRotationMatrix2D((float(self.center[0]), float(self.center[1])), self.angle, 1.0)
        if self.expand:
            # send the image centre to the centre of the enlarged output
            moved = matrix[:, :2] @ self.image_center + matrix[:, 2]
            matrix[:, 2] += np.array([self.bound_w / 2.0, self.bound_h / 2.0]) - moved
        if offset:
            # x_idx -> M(x_idx - offset) + offset
            matrix[:, 2] += offset - matrix[:, :2] @ np.array([offset, offset])
        return matrix

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        """Rotate an ``(h, w[, C])`` image into ``(bound_h, bound_w[, C])``; 0 outside."""
        if len(img) == 0 or self.angle % 360 == 0:
            return img
        if tuple(img.shape[:2]) != (self.h, self.w):
            raise ValueError(
                f"RotationTransform expects an image of size (h, w)=({self.h}, {self.w}); "
                f"got shape {tuple(img.shape)}."
            )
        flags = self.interp if interp is None else interp
        return cv2.warpAffine(img, self.rm_image, (self.bound_w, self.bound_h), flags=flags)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Rotate Nx2 XY coordinates (float64)."""
        coords = np.asarray(coords, dtype=np.float64)
        if len(coords) == 0 or self.angle % 360 == 0:
            return coords
        return coords @ self.rm_coords[:, :2].T + self.rm_coords[:, 2]

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Rotate a label image with nearest-neighbour sampling."""
        return self.apply_image(segmentation, interp=cv2.INTER_NEAREST)

    def inverse(self) -> TransformList:
        """Rotate back (expanding) and crop the original ``(h, w)`` out of the middle.

        Raises:
            NotImplementedError: without ``expand`` the corners are lost.
        """
        if not self.expand:
            raise NotImplementedError("A RotationTransform without expand cannot be inverted.")
        back = RotationTransform(self.bound_h, self.bound_w, -self.angle, True, None, self.interp)
        crop = CropTransform(
            (back.bound_w - self.w) // 2, (back.bound_h - self.h) // 2, self.w, self.h
        )
        return TransformList([back, crop])


class ColorTransform(Transform):
    """A photometric transform: ``op(image)``; coordinates and masks are unchanged."""

    def __init__(self, op: Callable[[np.ndarray], np.ndarray]):
        """
        Args:
            op: maps an ``(H, W, C)`` array to an array of the same size.

        Raises:
            ValueError: ``op`` is not callable.
        """
        if not callable(op):
            raise ValueError(f"ColorTransform needs a callable op; got {type(op).__name__}.")
        super().__init__()
        self._set_attributes({"op": op})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self.op(img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        """Colour changes are not undone geometrically: a no-op."""
        return NoOpTransform()


class PILColorTransform(ColorTransform):
    """A :class:`ColorTransform` whose ``op`` takes and returns a PIL image."""

    def __init__(self, op: Callable[[Image.Image], Image.Image]):
        """
        Args:
            op: maps a PIL image to a PIL image of the same size (e.g. an
                ``ImageEnhance`` call).
        """
        super().__init__(op)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.asarray(super().apply_image(Image.fromarray(img)))


# Rotated boxes (detectron2's "rotated_box" data type): (N, 5) float arrays of
# (x_center, y_center, width, height, angle in degrees, counter-clockwise), absolute pixels.
def _hflip_rotated_box(transform: HFlipTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    """Mirror the centres and negate the angles (in place)."""
    rotated_boxes[:, 0] = transform.width - rotated_boxes[:, 0]
    rotated_boxes[:, 4] = -rotated_boxes[:, 4]
    return rotated_boxes


def _resize_rotated_box(transform: ResizeTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    """Scale rotated boxes by ``(sx, sy)`` (in place).

    With the angle ``t``, the box's width axis is ``(cos t, -sin t)`` and its height axis
    ``(sin t, cos t)`` (y points down). Each axis is scaled componentwise; its new length
    scales the side, and the new height axis gives the new angle. Under unequal scaling
    the result is the rotated box spanned by the scaled axes (not a tight box).
    """
    sx = transform.new_w * 1.0 / transform.w
    sy = transform.new_h * 1.0 / transform.h
    theta = np.deg2rad(rotated_boxes[:, 4])
    cos, sin = np.cos(theta), np.sin(theta)
    rotated_boxes[:, 0] *= sx
    rotated_boxes[:, 1] *= sy
    rotated_boxes[:, 2] *= np.hypot(sx * cos, sy * sin)
    rotated_boxes[:, 3] *= np.hypot(sx * sin, sy * cos)
    rotated_boxes[:, 4] = np.rad2deg(np.arctan2(sx * sin, sy * cos))
    return rotated_boxes


HFlipTransform.register_type("rotated_box", _hflip_rotated_box)
ResizeTransform.register_type("rotated_box", _resize_rotated_box)
