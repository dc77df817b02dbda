"""Paste fixed-resolution instance masks (e.g. 28x28) into full images.

Each mask is treated as covering its box exactly, with its M x M cells at the box's
regular sub-grid; an image pixel centre (x + 0.5, y + 0.5) is mapped to normalised mask
coordinates ``(p - box_start) / box_size * 2 - 1`` and the mask is read there with
``F.grid_sample(..., align_corners=False)`` (bilinear, zero outside the mask). On CPU
each mask is pasted alone into the image region that bounds its box (plus one pixel),
which is the cheap way there; on GPU masks are pasted in chunks sized to stay under
``GPU_MEM_LIMIT`` bytes of float output.
"""
from typing import Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["paste_masks_in_image"]

BYTES_PER_FLOAT = 4
GPU_MEM_LIMIT = 1024**3  # 1 GiB of float output per pasted chunk on GPU


def _do_paste_mask(
    masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int, skip_empty: bool = True
) -> Tuple[torch.Tensor, tuple]:
    """Resample masks onto image pixels.

    Args:
        masks: Tensor[R, 1, M, M] (any dtype; sampled as float).
        boxes: Tensor[R, 4] (x1, y1, x2, y2) in image pixels.
        img_h, img_w: image size.
        skip_empty: sample only the region bounding all boxes (one pixel of margin,
            clipped to the image) instead of the whole image.

    Returns:
        (pasted, region): pasted is float Tensor[R, h, w]; region is the
        ``(slice_y, slice_x)`` of the image it covers when ``skip_empty`` (else ``()``,
        and h, w = img_h, img_w).
    """
    device = masks.device
    if skip_empty:
        x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
        x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
        y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    else:
        x0_int, y0_int, x1_int, y1_int = 0, 0, img_w, img_h
    bx0, by0, bx1, by1 = torch.split(boxes, 1, dim=1)  # each Tensor[R, 1]

    num = masks.shape[0]
    ys = torch.arange(y0_int, y1_int, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0_int, x1_int, device=device, dtype=torch.float32) + 0.5
    ys = (ys - by0) / (by1 - by0) * 2 - 1  # Tensor[R, h]
    xs = (xs - bx0) / (bx1 - bx0) * 2 - 1  # Tensor[R, w]
    grid = torch.stack(
        [xs[:, None, :].expand(num, ys.size(1), xs.size(1)), ys[:, :, None].expand(num, ys.size(1), xs.size(1))],
        dim=3,
    )
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    pasted = F.grid_sample(masks, grid.to(masks.dtype), align_corners=False)[:, 0]
    if skip_empty:
        return pasted, (slice(int(y0_int), int(y1_int)), slice(int(x0_int), int(x1_int)))
    return pasted, ()


def paste_masks_in_image(
    masks: torch.Tensor, boxes, image_shape: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Paste per-instance masks into an image of size ``image_shape`` at their boxes.

    Args:
        masks: Tensor[R, M, M], values in [0, 1] (square masks only).
        boxes: ``Boxes`` of length R or Tensor[R, 4] (x1, y1, x2, y2), same instances.
        image_shape: (height, width) of the output.
        threshold: a pixel is in the mask when the resampled value is >= threshold. A
            negative threshold returns the soft masks as uint8 ``value * 255``.

    Returns:
        Tensor[R, height, width]: bool when ``threshold >= 0``, else uint8. For R == 0,
        an empty uint8 tensor.
    """
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"paste_masks_in_image: only square masks are supported, got {tuple(masks.shape[-2:])}")
    num = len(masks)
    if num == 0:
        return masks.new_empty((0,) + tuple(image_shape), dtype=torch.uint8)
    if not isinstance(boxes, torch.Tensor):
        boxes = boxes.tensor
    if len(boxes) != num:
        raise ValueError(f"paste_masks_in_image: got {num} masks but boxes of shape {tuple(boxes.shape)}")
    device = boxes.device
    img_h, img_w = image_shape

    on_cpu = device.type == "cpu"
    if on_cpu:
        num_chunks = num  # one mask at a time keeps the sampled region small
    else:
        num_chunks = int(np.ceil(num * int(img_h) * int(img_w) * BYTES_PER_FLOAT / GPU_MEM_LIMIT))
        if num_chunks > num:
            raise ValueError("paste_masks_in_image: GPU_MEM_LIMIT is too small for one image; increase it")
    chunks = torch.chunk(torch.arange(num, device=device), num_chunks)

    out = torch.zeros(num, img_h, img_w, device=device, dtype=torch.bool if threshold >= 0 else torch.uint8)
    for inds in chunks:
        pasted, region = _do_paste_mask(masks[inds, None, :, :], boxes[inds], img_h, img_w, skip_empty=on_cpu)
        if threshold >= 0:
            pasted = pasted >= threshold
        else:
            pasted = (pasted * 255).to(dtype=torch.uint8)
        out[(inds,) + region] = pasted
    return out
