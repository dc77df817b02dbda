"""``SephFCOS``: detectron2's FCOS, built from a config, with the paper's IoU loss as an option.

::

    backbone (FPN, P3-P7) --> FCOSHead (RetinaNetHead towers, one location = one "anchor",
                              + centerness conv on the box tower)
    targets:  centre sampling (radius MODEL.SEPH.FCOS.CENTER_SAMPLING_RADIUS strides, or off:
              every location inside the box), scale ranges (4, 8) x stride per level,
              smallest box wins                              (detectron2's FCOS.match_anchors)
    losses:   loss_fcos_cls  focal, all locations
              loss_fcos_loc  GIoU (detectron2) or -ln(IoU) (the FCOS paper / UnitBox) on positives
              loss_fcos_ctr  BCE of centerness on positives; each / EMA of the positive count
    test:     sqrt(cls * centerness) > SCORE_THRESH_TEST, top-k per level, per-class NMS

Config: the head and its losses/test filters use detectron2's ``MODEL.RETINANET`` keys with
their meaning (IN_FEATURES, NUM_CLASSES, NUM_CONVS, NORM, PRIOR_PROB, FOCAL_LOSS_ALPHA/GAMMA,
SCORE_THRESH_TEST, TOPK_CANDIDATES_TEST, NMS_THRESH_TEST); FCOS's own choices live under
``MODEL.SEPH.FCOS`` (see ``sephnet/config/fcos.py``). With CENTER_SAMPLING on and
BOX_LOSS "giou" the model computes exactly detectron2's FCOS.
"""
import torch

from sephnet.backend import (
    FCOS,
    META_ARCH_REGISTRY,
    Boxes,
    build_backbone,
    cat,
    configurable,
)

from sephnet.modeling.meta_arch.dense_head import build_centerness_head

__all__ = ["SephFCOS", "iou_loss"]


def iou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """-ln(IoU) of matched XYXY boxes (R, 4) -> (R,) (UnitBox; FCOS's box loss).

    ``eps`` keeps the log finite for disjoint boxes.
    """
    wh = (torch.min(pred[:, 2:], target[:, 2:]) - torch.max(pred[:, :2], target[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    return -torch.log((inter + eps) / (area_p + area_t - inter + eps))


@META_ARCH_REGISTRY.register()
class SephFCOS(FCOS):
    """detectron2's :class:`FCOS` with a config entry point and a choice of box loss.

    Args: those of ``FCOS``, plus
        box_loss: "giou" (detectron2's FCOS) or "iou" (the paper's -ln IoU).
    Set ``center_sampling_radius=float("inf")`` to turn centre sampling off.
    """

    @configurable
    def __init__(self, *, box_loss: str = "giou", **kwargs):
        super().__init__(**kwargs)
        if box_loss not in ("giou", "iou"):
            raise ValueError(f"SephFCOS box_loss must be 'giou' or 'iou', got {box_loss!r}")
        self.box_loss = box_loss

    @classmethod
    def from_config(cls, cfg) -> dict:
        retina, fcos = cfg.MODEL.RETINANET, cfg.MODEL.SEPH.FCOS
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in retina.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.RETINANET.IN_FEATURES {list(retina.IN_FEATURES)}: {missing} not produced by "
                f"the backbone (it outputs {sorted(shapes)})"
            )
        feature_shapes = [shapes[f] for f in retina.IN_FEATURES]
        head = build_centerness_head(cfg, feature_shapes)
        radius = fcos.CENTER_SAMPLING_RADIUS if fcos.CENTER_SAMPLING else float("inf")
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": retina.IN_FEATURES,
            "num_classes": retina.NUM_CLASSES,
            "center_sampling_radius": radius,
            "focal_loss_alpha": retina.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": retina.FOCAL_LOSS_GAMMA,
            "test_score_thresh": retina.SCORE_THRESH_TEST,
            "test_topk_candidates": retina.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": retina.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "box_loss": fcos.BOX_LOSS,
        }

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness):
        """FCOS's three losses; with ``box_loss == "iou"`` the box term is -ln IoU."""
        losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness)
        if self.box_loss == "iou":
            positive = torch.stack(gt_labels)
            positive = (positive >= 0) & (positive != self.num_classes)
            all_anchors = Boxes.cat(anchors).tensor
            deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
            pred = torch.stack([self.box2box_transform.apply_deltas(d, all_anchors) for d in deltas])
            target = torch.stack([b.tensor for b in gt_boxes])
            loss = iou_loss(pred[positive], target[positive]).sum()
            losses["loss_fcos_loc"] = loss / self.loss_normalizer
        return losses

