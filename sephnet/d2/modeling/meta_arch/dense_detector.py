"""``DenseDetector``: the base of one-stage detectors that predict at every feature-map
location (RetinaNet, FCOS), with detectron2 v0.6's interface.

    images -> normalise, pad -> backbone -> [features[f] for f in head_in_features]
           -> head(features) = predictions, a list of per-level lists
    training:  forward_training(images, features, predictions, gt_instances) -> losses
    inference: forward_inference(images, features, predictions) -> Instances per image,
               rescaled to each input's "height"/"width" by detector_postprocess

Subclasses implement ``forward_training`` and ``forward_inference``; the helpers below
reshape dense predictions, keep the EMA loss normaliser, and decode top-scoring boxes.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from sephnet.d2.modeling.backbone import Backbone
from sephnet.d2.modeling.postprocessing import detector_postprocess
from sephnet.d2.structures import Boxes, ImageList, Instances
from sephnet.d2.utils.events import get_event_storage

__all__ = ["DenseDetector", "permute_to_N_HWA_K"]


def permute_to_N_HWA_K(tensor: Tensor, K: int) -> Tensor:  # noqa: N802 (detectron2's name)
    """(N, A*K, H, W) -> (N, H*W*A, K): location-major, anchor-minor, as anchors are listed."""
    if tensor.dim() != 4:
        raise ValueError(f"permute_to_N_HWA_K expects a 4-d tensor, got shape {tuple(tensor.shape)}")
    n, _, h, w = tensor.shape
    return tensor.view(n, -1, K, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, K)


class DenseDetector(nn.Module):
    """Fully convolutional detector making per-location predictions.

    Args:
        backbone: a :class:`Backbone`.
        head: module mapping the list of head features to a list of per-level prediction
            lists (e.g. ``[logits, box_deltas]``).
        head_in_features: backbone outputs fed to the head; default all, by increasing stride.
        pixel_mean, pixel_std: per-channel normalisation (in ``INPUT.FORMAT`` order).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Optional[List[str]] = None,
        *,
        pixel_mean,
        pixel_std,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        if head_in_features is None:
            shapes = backbone.output_shape()
            head_in_features = sorted(shapes, key=lambda name: shapes[name].stride)
        self.head_in_features = head_in_features
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(
                f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} have different "
                "lengths (MODEL.PIXEL_MEAN / MODEL.PIXEL_STD)"
            )
        # Non-persistent: not part of the state dict, as in detectron2.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        """
        Args:
            batched_inputs: N dicts with "image" (C, H, W), "instances" (training) and optional
                "height"/"width" (output resolution at inference).

        Returns:
            Training: dict of scalar losses (needs an ``EventStorage``).
            Inference: ``[{"instances": Instances}, ...]`` with pred_boxes, scores, pred_classes.
        """
        images = self.preprocess_image(batched_inputs)
        all_features = self.backbone(images.tensor)
        features = [all_features[name] for name in self.head_in_features]
        predictions = self.head(features)
        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("training a dense detector needs 'instances' in every input dict")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.forward_training(images, features, predictions, gt_instances)
        results = self.forward_inference(images, features, predictions)
        outputs = []
        for result, inputs, (height, width) in zip(results, batched_inputs, images.image_sizes):
            out_h = inputs.get("height", height)
            out_w = inputs.get("width", width)
            outputs.append({"instances": detector_postprocess(result, out_h, out_w)})
        return outputs

    def forward_training(self, images, features, predictions, gt_instances):
        raise NotImplementedError()

    def forward_inference(self, images, features, predictions):
        raise NotImplementedError()

    def preprocess_image(self, batched_inputs: List[Dict[str, Tensor]]) -> ImageList:
        """Normalise every "image" and pad them into one batch divisible by the backbone's
        ``size_divisibility``."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def _transpose_dense_predictions(
        self, predictions: List[List[Tensor]], dims_per_anchor: List[int]
    ) -> List[List[Tensor]]:
        """Each per-level (N, A*K, H, W) prediction -> (N, H*W*A, K), K = ``dims_per_anchor[i]``
        for the i-th prediction kind."""
        if len(predictions) != len(dims_per_anchor):
            raise ValueError(
                f"{len(predictions)} prediction kinds but {len(dims_per_anchor)} dims_per_anchor"
            )
        return [
            [permute_to_N_HWA_K(level, dim) for level in per_kind]
            for per_kind, dim in zip(predictions, dims_per_anchor)
        ]

    def _ema_update(self, name: str, value: float, initial_value: float, momentum: float = 0.9) -> float:
        """Exponential moving average stored as the plain attribute ``self.<name>``.

        Used for the loss normaliser: the number of foreground anchors of one small batch is
        noisy, its running average is not. The first call starts from ``initial_value``.
        Returns the updated average.
        """
        old = getattr(self, name, initial_value)
        new = old * momentum + value * (1 - momentum)
        setattr(self, name, new)
        return new

    def _decode_per_level_predictions(
        self,
        anchors: Boxes,
        pred_scores: Tensor,
        pred_deltas: Tensor,
        score_thresh: float,
        topk_candidates: int,
        image_size: Tuple[int, int],
    ) -> Instances:
        """Candidates of one level: (anchor, class) pairs scoring above ``score_thresh``, the
        ``topk_candidates`` best of them, their boxes decoded from ``pred_deltas``.

        Args:
            anchors: (R, 4) anchors of the level.
            pred_scores: (R, K) probabilities; pred_deltas: (R, 4).

        Returns:
            Instances with pred_boxes, scores (descending) and pred_classes.
        """
        above = pred_scores > score_thresh
        scores = pred_scores[above]
        anchor_class = torch.nonzero(above)  # (M, 2): anchor index, class
        count = min(topk_candidates, anchor_class.size(0))
        scores, order = scores.sort(descending=True)
        scores = scores[:count]
        anchor_idx, class_idx = anchor_class[order[:count]].unbind(dim=1)
        boxes = self.box2box_transform.apply_deltas(pred_deltas[anchor_idx], anchors.tensor[anchor_idx])
        return Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=class_idx)

    def _decode_multi_level_predictions(
        self,
        anchors: List[Boxes],
        pred_scores: List[Tensor],
        pred_deltas: List[Tensor],
        score_thresh: float,
        topk_candidates: int,
        image_size: Tuple[int, int],
    ) -> Instances:
        """:meth:`_decode_per_level_predictions` on every level, concatenated.

        As in detectron2 v0.6, the thresholds applied are the model's ``test_score_thresh``
        and ``test_topk_candidates`` (the two arguments are accepted for the signature only).
        """
        per_level = [
            self._decode_per_level_predictions(
                level_anchors, scores, deltas, self.test_score_thresh, self.test_topk_candidates, image_size
            )
            for scores, deltas, level_anchors in zip(pred_scores, pred_deltas, anchors)
        ]
        return Instances.cat(per_level)

    def visualize_training(self, batched_inputs: List[Dict], results: List[Instances]) -> None:
        """Put the first image into the event storage: gt boxes above its 20 best detections."""
        from sephnet.d2.data.detection_utils import convert_image_to_rgb
        from sephnet.d2.utils.visualizer import Visualizer

        if len(batched_inputs) != len(results):
            raise ValueError("visualize_training needs one result per input")
        image = batched_inputs[0]["image"]
        image = convert_image_to_rgb(image.permute(1, 2, 0), self.input_format)
        gt_panel = Visualizer(image, None).overlay_instances(boxes=batched_inputs[0]["instances"].gt_boxes)
        shown = detector_postprocess(results[0], image.shape[0], image.shape[1])
        boxes = shown.pred_boxes.tensor.detach().cpu().numpy()[:20]
        pred_panel = Visualizer(image, None).overlay_instances(boxes=boxes)
        both = np.vstack((gt_panel.get_image(), pred_panel.get_image())).transpose(2, 0, 1)
        get_event_storage().put_image("Top: GT bounding boxes; Bottom: 20 Highest Scoring Results", both)
