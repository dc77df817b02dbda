"""Mapping detector outputs from the network's input resolution back to a requested resolution.

Shape letters: R = #detections of one image, M = mask resolution, C = #classes.
"""
from typing import Tuple, Union

import torch
from torch.nn import functional as F

from sephnet.d2.structures import Instances, ROIMasks


def detector_postprocess(
    results: Instances,
    output_height: Union[int, torch.Tensor],
    output_width: Union[int, torch.Tensor],
    mask_threshold: float = 0.5,
) -> Instances:
    """Resize one image's raw detections to ``(output_height, output_width)``.

    ``results.image_size`` is the resolution the network saw. Boxes (``pred_boxes``, or
    ``proposal_boxes`` for proposal-only models) are scaled by output/input size per axis, clipped
    to the output image, and instances whose box became empty (zero width or height) are dropped.
    ``pred_masks`` of shape (R, 1, M, M) (float probabilities, or a ``ROIMasks``) are pasted into
    the output image at the scaled boxes and binarised at ``mask_threshold``, giving a bool
    (R, H, W) tensor.
    ``pred_keypoints`` (R, K, 3), if present, have their x/y scaled in place.

    Args:
        results: raw detections of one image; its fields may be modified in place.
        output_height, output_width: target resolution (ints, or 0-dim integer tensors).
        mask_threshold: probability threshold for mask binarisation.

    Returns:
        A new ``Instances`` of size ``(output_height, output_width)`` with the same fields.

    Raises:
        ValueError: if ``results`` has neither ``pred_boxes`` nor ``proposal_boxes``.
    """
    if isinstance(output_height, torch.Tensor):
        new_size = torch.stack([output_height, output_width])
        scale_x = output_width.float() / results.image_size[1]
        scale_y = output_height.float() / results.image_size[0]
    else:
        new_size = (output_height, output_width)
        scale_x = output_width / results.image_size[1]
        scale_y = output_height / results.image_size[0]
    results = Instances(new_size, **results.get_fields())

    if results.has("pred_boxes"):
        boxes = results.pred_boxes
    elif results.has("proposal_boxes"):
        boxes = results.proposal_boxes
    else:
        raise ValueError(
            "Predictions must contain boxes! Expected a 'pred_boxes' or 'proposal_boxes' field, "
            f"got fields {sorted(results.get_fields())}"
        )
    boxes.scale(scale_x, scale_y)
    boxes.clip(results.image_size)
    results = results[boxes.nonempty()]

    if results.has("pred_masks"):
        masks = results.pred_masks
        if not isinstance(masks, ROIMasks):
            masks = ROIMasks(masks[:, 0, :, :])
        results.pred_masks = masks.to_bitmasks(
            results.pred_boxes, output_height, output_width, mask_threshold
        ).tensor

    if results.has("pred_keypoints"):
        results.pred_keypoints[:, :, 0] *= scale_x
        results.pred_keypoints[:, :, 1] *= scale_y
    return results


def sem_seg_postprocess(
    result: torch.Tensor, img_size: Tuple[int, int], output_height: int, output_width: int
) -> torch.Tensor:
    """Crop padded semantic-segmentation logits to the image and resize them.

    Args:
        result: (C, H, W) per-pixel logits of the padded network input.
        img_size: (h, w) of the un-padded image inside ``result``.
        output_height, output_width: target resolution.

    Returns:
        (C, output_height, output_width) logits, bilinearly resized (align_corners=False).
    """
    cropped = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(
        cropped, size=(output_height, output_width), mode="bilinear", align_corners=False
    )[0]
