"""DETR's set loss: match predictions to targets one-to-one, then classify and regress.

For one decoder output (N images, Q queries, K classes, T targets in all) and the matching
of :class:`~sephnet.modeling.matchers.HungarianMatcher`::

    loss_cls  = sum_q w(c_q) * CE(logits_q, c_q) / sum_q w(c_q)      over all N * Q queries
    loss_bbox = sum_matched |b_q - b_t|_1 / T                        (cxcywh, normalised)
    loss_giou = sum_matched (1 - GIoU(b_q, b_t)) / T

where c_q is the class of the target matched to query q, or K ("no object") for unmatched
queries, and w(c) = 1 for the K classes and ``no_object_weight`` (the paper's 0.1) for
"no object". T is averaged over the processes of a distributed run and at least 1. Each
loss is returned multiplied by its weight. With ``deep_supervision`` the same losses of
every earlier decoder layer (each matched on its own) are added under ``<name>_<layer>``,
layers counted from 0; the last layer's keep the plain names.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from fvcore.nn import giou_loss

from sephnet.backend import comm
from sephnet.layers.box_ops import box_cxcywh_to_xyxy
from sephnet.modeling.matchers.hungarian import HungarianMatcher

__all__ = ["SetCriterion"]


class SetCriterion(torch.nn.Module):
    """The matching and the weighted losses of every decoder layer."""

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        no_object_weight: float = 0.1,
        deep_supervision: bool = True,
    ):
        """
        Args:
            num_classes: K; logits have K + 1 entries, the last is "no object".
            matcher: pairs predictions with targets.
            class_weight, bbox_weight, giou_weight: multipliers of ``loss_cls``,
                ``loss_bbox``, ``loss_giou`` (the paper's 1, 5, 2).
            no_object_weight: relative weight of the "no object" class in the CE, in (0, 1].
            deep_supervision: also supervise every earlier decoder layer.
        """
        super().__init__()
        if not 0 < no_object_weight <= 1:
            raise ValueError(f"no_object_weight={no_object_weight}; expected a number in (0, 1].")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_cls": class_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.deep_supervision = deep_supervision
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        # a buffer, so it follows the model's device (not saved: it is fixed by the arguments)
        self.register_buffer("class_weights", class_weights, persistent=False)

    def num_targets(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """T: the number of target boxes, averaged over processes, at least 1."""
        total = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(total)
            total = total / comm.get_world_size()
        return max(total.item(), 1.0)

    def layer_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: List[Dict[str, torch.Tensor]],
        num_targets: float,
    ) -> Dict[str, torch.Tensor]:
        """The weighted losses of one decoder layer.

        Args:
            logits: ``[N, Q, K + 1]``; boxes: ``[N, Q, 4]`` normalised cxcywh.
            targets: per image ``{"labels": int64 [T_n], "boxes": [T_n, 4] normalised cxcywh}``.
            num_targets: T, the divisor of the box losses.

        Returns:
            ``{"loss_cls", "loss_bbox", "loss_giou"}``, scalars.
        """
        matches = self.matcher(logits, boxes, targets)
        image_idx = torch.cat([torch.full_like(p, n) for n, (p, _) in enumerate(matches)])
        query_idx = torch.cat([p for p, _ in matches])
        gt_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        gt_classes[image_idx, query_idx] = torch.cat(
            [t["labels"][g] for t, (_, g) in zip(targets, matches)]
        ).to(logits.device)
        loss_cls = F.cross_entropy(logits.transpose(1, 2), gt_classes, weight=self.class_weights)

        matched = boxes[image_idx, query_idx]
        gt_boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, matches)]).to(boxes)
        loss_bbox = F.l1_loss(matched, gt_boxes, reduction="sum") / num_targets
        loss_giou = giou_loss(
            box_cxcywh_to_xyxy(matched), box_cxcywh_to_xyxy(gt_boxes), reduction="sum"
        ) / num_targets
        losses = {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        return {name: self.weights[name] * value for name, value in losses.items()}

    def forward(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            logits: ``[D, N, Q, K + 1]``; boxes: ``[D, N, Q, 4]``: every decoder layer's
                predictions, the last layer's last.
            targets: as in :meth:`layer_losses`.

        Returns:
            The last layer's losses, plus ``<name>_<layer>`` for layers 0 .. D-2 with
            ``deep_supervision``.
        """
        num_targets = self.num_targets(targets, logits.device)
        losses = self.layer_losses(logits[-1], boxes[-1], targets, num_targets)
        if self.deep_supervision:
            for layer in range(len(logits) - 1):
                aux = self.layer_losses(logits[layer], boxes[layer], targets, num_targets)
                losses.update({f"{name}_{layer}": value for name, value in aux.items()})
        return losses
