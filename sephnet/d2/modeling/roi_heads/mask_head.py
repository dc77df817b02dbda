"""Mask R-CNN mask heads, the mask loss and mask inference.

Shape letters: B masks over the whole batch (one per foreground region in training, one per
detection at test time), C mask classes (K foreground classes, or 1 when class-agnostic),
M the side of the square predicted mask.
"""
from typing import Callable, List, Union

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.d2.config import configurable
from sephnet.d2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from sephnet.d2.structures import Instances
from sephnet.d2.utils.events import get_event_storage
from sephnet.d2.utils.registry import Registry

__all__ = [
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "build_mask_head",
    "ROI_MASK_HEAD_REGISTRY",
    "mask_rcnn_loss",
    "mask_rcnn_inference",
]

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = """
Mask heads predicting per-region instance masks from region features.
Each entry is called as ``obj(cfg, input_shape)``.
"""


def mask_rcnn_loss(
    pred_mask_logits: torch.Tensor, instances: List[Instances], vis_period: int = 0
) -> torch.Tensor:
    """Per-pixel binary cross entropy between predicted mask logits and ground-truth masks.

    Each region's target is its matched gt mask cropped to the region's ``proposal_boxes``
    and resampled to ``M x M`` (``gt_masks.crop_and_resize``). With class-specific masks only
    the channel of the region's ``gt_classes`` is used. Accuracy, false-positive and
    false-negative rates (logit > 0 vs target > 0.5) go to the EventStorage under
    ``mask_rcnn/``, which must exist; with ``vis_period > 0`` prediction/target images are
    also stored every ``vis_period`` iterations.

    Args:
        pred_mask_logits: float ``[B, C, M, M]``; B equals the total length of ``instances``.
        instances: per image, the foreground regions with ``proposal_boxes``, ``gt_masks``
            (BitMasks or PolygonMasks) and, for class-specific masks, ``gt_classes``.
        vis_period: visualisation period in iterations (0 disables it).

    Returns:
        scalar float tensor: the mean BCE over all pixels of all regions; zero (connected to
        the graph) when there are no regions.
    """
    if pred_mask_logits.size(2) != pred_mask_logits.size(3):
        raise ValueError(
            f"mask predictions must be square, got shape {tuple(pred_mask_logits.shape)}"
        )
    class_agnostic = pred_mask_logits.size(1) == 1
    side = pred_mask_logits.size(2)

    targets, classes = [], []
    for per_image in instances:
        if len(per_image) == 0:
            continue
        targets.append(
            per_image.gt_masks.crop_and_resize(per_image.proposal_boxes.tensor, side).to(
                device=pred_mask_logits.device
            )
        )
        if not class_agnostic:
            classes.append(per_image.gt_classes.to(dtype=torch.int64))

    if not targets:
        return pred_mask_logits.sum() * 0

    target = cat(targets, dim=0)
    if class_agnostic:
        logits = pred_mask_logits[:, 0]
    else:
        rows = torch.arange(pred_mask_logits.size(0), device=pred_mask_logits.device)
        logits = pred_mask_logits[rows, cat(classes, dim=0)]

    # crop_and_resize of BitMasks returns bool; other rasterisers may return soft floats.
    target_fg = target if target.dtype == torch.bool else target > 0.5
    target = target.to(dtype=torch.float32)

    wrong = (logits > 0.0) != target_fg
    num_pixels = wrong.numel()
    num_pos = int(target_fg.sum())
    storage = get_event_storage()
    storage.put_scalar("mask_rcnn/accuracy", 1 - int(wrong.sum()) / max(num_pixels, 1.0))
    storage.put_scalar(
        "mask_rcnn/false_positive", int((wrong & ~target_fg).sum()) / max(num_pixels - num_pos, 1.0)
    )
    storage.put_scalar(
        "mask_rcnn/false_negative", int((wrong & target_fg).sum()) / max(num_pos, 1.0)
    )
    if vis_period > 0 and storage.iter % vis_period == 0:
        side_by_side = torch.cat([logits.sigmoid(), target], dim=2)
        title = "left: predicted masks, right: ground-truth masks"
        for idx, image in enumerate(side_by_side):
            storage.put_image(f"{title} ({idx})", torch.stack([image] * 3, dim=0))

    return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")


def mask_rcnn_inference(pred_mask_logits: torch.Tensor, pred_instances: List[Instances]) -> None:
    """Attach soft masks to detections: sigmoid of the mask channel of each predicted class.

    Args:
        pred_mask_logits: float ``[B, C, M, M]``, one row per detection over all images.
        pred_instances: per image, detections with ``pred_classes``; modified in place: each
            gets ``pred_masks``, float ``[Di, 1, M, M]`` probabilities at the head's resolution
            (pasting into the image happens later, in post-processing).
    """
    if pred_mask_logits.size(1) == 1:
        probs = pred_mask_logits.sigmoid()
    else:
        classes = cat([inst.pred_classes for inst in pred_instances])
        rows = torch.arange(pred_mask_logits.shape[0], device=classes.device)
        probs = pred_mask_logits[rows, classes][:, None].sigmoid()

    for per_image_probs, inst in zip(
        probs.split([inst.__len__() for inst in pred_instances], dim=0), pred_instances
    ):
        inst.pred_masks = per_image_probs


class BaseMaskRCNNHead(nn.Module):
    """Shared training/inference logic of Mask R-CNN heads; subclasses define :meth:`layers`.

    In training ``forward`` returns ``{"loss_mask": loss_weight * mask_rcnn_loss(...)}``; at
    test time it writes ``pred_masks`` into the given instances and returns them.
    """

    @configurable
    def __init__(self, *, loss_weight: float = 1.0, vis_period: int = 0):
        """
        Args:
            loss_weight: multiplier of the mask loss.
            vis_period: iterations between mask visualisations in the EventStorage (0: never).
        """
        super().__init__()
        self.vis_period = vis_period
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"vis_period": cfg.VIS_PERIOD}

    def forward(self, x, instances: List[Instances]):
        """
        Args:
            x: region features for the regions of ``instances`` (usually float ``[B, C, S, S]``).
            instances: in training the foreground proposals with their gt fields; at test time
                the detections (with ``pred_classes``).

        Returns:
            training: dict with ``loss_mask``; inference: ``instances`` with ``pred_masks``.
        """
        logits = self.layers(x)
        if self.training:
            loss = mask_rcnn_loss(logits, instances, self.vis_period)
            return {"loss_mask": loss * self.loss_weight}
        mask_rcnn_inference(logits, instances)
        return instances

    def layers(self, x):
        """The network: region features -> mask logits ``[B, C, M, M]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement layers()")


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead, nn.Sequential):
    """Mask head of Mask R-CNN: 3x3 convs, a 2x transposed-conv upsample, 1x1 predictor.

    Topology (children in execution order)::

        [B, C, S, S] -> mask_fcn1 .. mask_fcnN (conv3x3 -> norm -> ReLU)
                     -> deconv (2x2, stride 2) -> deconv_relu
                     -> predictor (1x1) -> [B, num_classes, 2S, 2S]
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        conv_norm: Union[str, Callable[[int], nn.Module]] = "",
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the region features.
            num_classes: mask channels to predict: K, or 1 for class-agnostic masks.
            conv_dims: N >= 1 channel counts: the first N-1 are the 3x3 convs, the last is the
                transposed conv's output.
            conv_norm: norm of the 3x3 convs (see :func:`get_norm`); "" for none.
            kwargs: forwarded to :class:`BaseMaskRCNNHead` (``loss_weight``, ``vis_period``).
        """
        super().__init__(**kwargs)
        if len(conv_dims) < 1:
            raise ValueError("MaskRCNNConvUpsampleHead needs a non-empty conv_dims")

        channels = input_shape.channels
        # plain list of the 3x3 convs (a handle, not a second registration), as in detectron2
        self.conv_norm_relus: List[nn.Module] = []
        for idx, out_channels in enumerate(conv_dims[:-1], start=1):
            conv = Conv2d(
                channels,
                out_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, out_channels),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{idx}", conv)
            self.conv_norm_relus.append(conv)
            channels = out_channels

        self.deconv = ConvTranspose2d(channels, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.deconv_relu = nn.ReLU()
        channels = conv_dims[-1]
        self.predictor = Conv2d(channels, num_classes, kernel_size=1, stride=1, padding=0)

        for layer in self.conv_norm_relus + [self.deconv]:
            weight_init.c2_msra_fill(layer)
        # A tiny predictor init starts every mask near probability 0.5.
        nn.init.normal_(self.predictor.weight, std=0.001)
        if self.predictor.bias is not None:
            nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_MASK_HEAD
        ret.update(
            input_shape=input_shape,
            # one extra entry for the transposed conv
            conv_dims=[head.CONV_DIM] * (head.NUM_CONV + 1),
            conv_norm=head.NORM,
            num_classes=1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """float ``[B, C, S, S]`` -> mask logits ``[B, num_classes, 2S, 2S]``."""
        for layer in self:
            x = layer(x)
        return x


def build_mask_head(cfg, input_shape) -> nn.Module:
    """Build the mask head named by ``cfg.MODEL.ROI_MASK_HEAD.NAME``."""
    return ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)(cfg, input_shape)
