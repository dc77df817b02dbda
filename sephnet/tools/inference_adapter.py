"""A detector as a function of one image tensor returning a tuple of tensors.

Tracing (fvcore's FLOP counter, ``torch.jit.trace``, ONNX export) needs a module whose
inputs and outputs are tensors; detectron2's meta-architectures take a list of dicts and
return ``Instances``. :class:`InferenceAdapter` bridges the two for one image::

    image (uint8/float Tensor[3, H, W], the model's input format, already resized)
      -> model.inference([{"image": image}], do_postprocess=False)   (R-CNN models), or
         preprocess, backbone, head, model.forward_inference        (dense detectors)
      -> (pred_boxes Tensor[R, 4], scores Tensor[R], pred_classes int64 Tensor[R],
          [pred_masks Tensor[R, 1, M, M]: mask probabilities before pasting])

Boxes are in the input image's coordinates (no rescaling to an original size), and masks
are the mask head's M x M probabilities; pasting them into the image is left to the caller
(:func:`paste_adapter_masks`), as detectron2's own export does, because pasting depends on
the output size.
"""
from typing import List, Sequence, Tuple

import torch
from torch import nn

from sephnet.backend import Boxes, Instances, paste_masks_in_image

__all__ = ["InferenceAdapter", "outputs_to_instances", "paste_adapter_masks"]


class InferenceAdapter(nn.Module):
    """Wrap a detectron2-style meta-architecture (``GeneralizedRCNN`` and subclasses, or a
    ``DenseDetector``: RetinaNet, FCOS, ATSS) so that ``forward(image)`` returns plain tensors
    (see the module docstring).

    Args:
        model: the detector, in eval mode.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # exporters restore the adapter's mode onto the model
        self.with_masks = bool(getattr(getattr(model, "roi_heads", None), "mask_on", False))

    @property
    def output_names(self) -> List[str]:
        """Names of the returned tensors, in order."""
        names = ["pred_boxes", "scores", "pred_classes"]
        return names + ["pred_masks"] if self.with_masks else names

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if hasattr(self.model, "forward_inference"):  # a DenseDetector: its forward() rescales
            images = self.model.preprocess_image([{"image": image}])
            features = self.model.backbone(images.tensor)
            features = [features[f] for f in self.model.head_in_features]
            predictions = self.model.head(features)
            (instances,) = self.model.forward_inference(images, features, predictions)
        else:
            (instances,) = self.model.inference([{"image": image}], do_postprocess=False)
        outputs = [instances.pred_boxes.tensor, instances.scores, instances.pred_classes]
        if self.with_masks:
            outputs.append(instances.pred_masks)
        return tuple(outputs)


def outputs_to_instances(
    outputs: Sequence[torch.Tensor], names: Sequence[str], image_size: Tuple[int, int]
) -> Instances:
    """Rebuild ``Instances`` (of size ``image_size`` = (H, W)) from an adapter's outputs."""
    fields = dict(zip(names, outputs))
    result = Instances(image_size)
    result.pred_boxes = Boxes(fields["pred_boxes"])
    result.scores = fields["scores"]
    result.pred_classes = fields["pred_classes"]
    if "pred_masks" in fields:
        result.pred_masks = fields["pred_masks"]
    return result


def paste_adapter_masks(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Paste M x M mask probabilities (R, 1, M, M) into bool masks (R, H, W) at ``boxes``."""
    return paste_masks_in_image(masks[:, 0, :, :], Boxes(boxes), image_size, threshold=threshold)
