"""SephDETR: DETR (Carion et al., "End-to-End Object Detection with Transformers", 2020)
as a detectron2 meta-architecture (docs/detr.md).

::

    images --backbone--> features[IN_FEATURE] [N, C, H, W] --1x1 conv--> src [N, d, H, W]
    padding mask (True on padded pixels) --nearest--> [N, H, W] --sine--> pos [N, d, H, W]
    transformer(src, mask, query_embed [Q, d], pos) --> hs [D, N, Q, d]
    class head (Linear d -> K + 1)          --> logits [D, N, Q, K + 1]   ("no object" = K)
    box head (3-layer MLP, sigmoid)         --> boxes  [D, N, Q, 4]  cx, cy, w, h in [0, 1]
                                                of each image's unpadded size
    training:  SetCriterion(logits, boxes, targets) -> loss_cls, loss_bbox, loss_giou (+ _<layer>)
    inference: last layer; per query softmax, best of the K classes as label and score,
               the TEST.DETECTIONS_PER_IMAGE best queries -> Instances in input-image pixels

Batching, normalisation by ``MODEL.PIXEL_MEAN/STD`` and the rescaling of results to each
input's ``height``/``width`` are detectron2's (``ImageList``, ``detector_postprocess``).
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from sephnet.backend import (
    META_ARCH_REGISTRY,
    Boxes,
    ImageList,
    Instances,
    build_backbone,
    configurable,
    detector_postprocess,
)
from sephnet.layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from sephnet.layers.mlp import MLP
from sephnet.modeling.losses.set_criterion import SetCriterion
from sephnet.modeling.matchers.hungarian import HungarianMatcher
from sephnet.modeling.transformer import DETRTransformer, SinePositionalEncoding

__all__ = ["SephDETR"]


@META_ARCH_REGISTRY.register()
class SephDETR(nn.Module):
    """DETR: a backbone, a transformer, object queries, and a set loss."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_feature: str,
        transformer: DETRTransformer,
        num_classes: int,
        num_queries: int,
        criterion: SetCriterion,
        pixel_mean: List[float],
        pixel_std: List[float],
        detections_per_image: int = 100,
    ):
        """
        Args:
            backbone: a detectron2 ``Backbone`` with ``in_feature`` among its outputs.
            in_feature: the backbone output the transformer reads (e.g. ``"res5"``).
            transformer: its ``d_model`` is the width d of the projection, the encoding
                and the queries.
            num_classes: K foreground classes.
            num_queries: Q object queries (the most objects an image can have).
            criterion: the set loss (training only).
            pixel_mean, pixel_std: per input channel, as ``MODEL.PIXEL_MEAN/STD``.
            detections_per_image: at most this many detections per image (<= Q are made).
        """
        super().__init__()
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(
                f"SephDETR: in_feature={in_feature!r} is not a backbone output; it has "
                f"{sorted(shapes)}."
            )
        d = transformer.d_model
        if d % 2:
            raise ValueError(f"SephDETR: the transformer width {d} must be even (sine encoding).")
        self.backbone = backbone
        self.in_feature = in_feature
        self.input_proj = nn.Conv2d(shapes[in_feature].channels, d, kernel_size=1)
        self.position_encoding = SinePositionalEncoding(num_pos_feats=d // 2)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, num_layers=3)
        self.criterion = criterion
        self.num_classes = num_classes
        self.detections_per_image = detections_per_image
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        detr = cfg.MODEL.SEPH.DETR
        matcher = HungarianMatcher(
            cost_class=detr.COST_CLASS, cost_bbox=detr.COST_BBOX, cost_giou=detr.COST_GIOU
        )
        return {
            "backbone": build_backbone(cfg),
            "in_feature": detr.IN_FEATURE,
            "transformer": DETRTransformer(
                d_model=detr.HIDDEN_DIM,
                nhead=detr.NHEADS,
                num_encoder_layers=detr.ENC_LAYERS,
                num_decoder_layers=detr.DEC_LAYERS,
                dim_feedforward=detr.DIM_FEEDFORWARD,
                dropout=detr.DROPOUT,
            ),
            "num_classes": detr.NUM_CLASSES,
            "num_queries": detr.NUM_QUERIES,
            "criterion": SetCriterion(
                num_classes=detr.NUM_CLASSES,
                matcher=matcher,
                class_weight=detr.CLASS_WEIGHT,
                bbox_weight=detr.L1_WEIGHT,
                giou_weight=detr.GIOU_WEIGHT,
                no_object_weight=detr.NO_OBJECT_WEIGHT,
                deep_supervision=detr.DEEP_SUPERVISION,
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise, pad and batch the ``"image"`` tensors ([C, H, W] each)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def predict(self, images: ImageList):
        """Every decoder layer's ``(logits [D, N, Q, K + 1], boxes [D, N, Q, 4])``."""
        feature = self.backbone(images.tensor)[self.in_feature]
        n, _, height, width = images.tensor.shape
        padded = torch.ones((n, height, width), dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(images.image_sizes):
            padded[i, :h, :w] = False
        mask = F.interpolate(padded[None].float(), size=feature.shape[-2:])[0].bool()
        pos = self.position_encoding(mask).to(feature.dtype)
        hs = self.transformer(self.input_proj(feature), mask, self.query_embed.weight, pos)
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2's list of dicts (``"image"``; in training
                ``"instances"`` with ``gt_boxes``, ``gt_classes``; optional ``"height"``,
                ``"width"`` of the output).

        Returns:
            Training: the dict of weighted losses. Inference: ``[{"instances": Instances}]``
            with ``pred_boxes`` (XYXY pixels), ``scores``, ``pred_classes``.
        """
        images = self.preprocess_image(batched_inputs)
        logits, boxes = self.predict(images)
        if self.training:
            targets = [
                self.prepare_target(x["instances"].to(self.device), size)
                for x, size in zip(batched_inputs, images.image_sizes)
            ]
            return self.criterion(logits, boxes, targets)
        results = []
        for logit, box, size, inputs in zip(logits[-1], boxes[-1], images.image_sizes, batched_inputs):
            instances = self.inference_single_image(logit, box, size)
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            results.append({"instances": detector_postprocess(instances, height, width)})
        return results

    @staticmethod
    def prepare_target(instances: Instances, image_size) -> Dict[str, torch.Tensor]:
        """``{"labels": [T], "boxes": [T, 4]}``: gt boxes as cxcywh normalised by the
        unpadded ``image_size`` (h, w)."""
        h, w = image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=instances.gt_boxes.device)
        boxes = box_xyxy_to_cxcywh(instances.gt_boxes.tensor / scale)
        return {"labels": instances.gt_classes, "boxes": boxes}

    def inference_single_image(self, logits: torch.Tensor, boxes: torch.Tensor, image_size) -> Instances:
        """One image's detections in the pixels of its (unpadded) network input.

        Args:
            logits: ``[Q, K + 1]``; boxes: ``[Q, 4]`` normalised cxcywh; image_size: (h, w).
        """
        scores, classes = logits.softmax(-1)[:, :-1].max(-1)
        keep = scores.argsort(descending=True)[: self.detections_per_image]
        h, w = image_size
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        result = Instances(image_size)
        result.pred_boxes = Boxes(box_cxcywh_to_xyxy(boxes[keep]) * scale)
        result.scores = scores[keep]
        result.pred_classes = classes[keep]
        return result
