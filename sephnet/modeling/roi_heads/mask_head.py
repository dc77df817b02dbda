"""Mask head whose convs and deconv carry the configured norm ("EvoNormS0 mask head",
docs/components.md#mask-head)."""
from typing import List

import fvcore.nn.weight_init as weight_init
from torch import nn

from sephnet.backend import (
    ROI_MASK_HEAD_REGISTRY,
    Conv2d,
    ShapeSpec,
    configurable,
    import_module,
)
from sephnet.layers.blocks import conv_norm_act
from sephnet.layers.norm import build_norm, norm_includes_activation

__all__ = ["SephMaskRCNNConvUpsampleHead"]

_mask_head = import_module("modeling.roi_heads.mask_head")
_ConvTranspose2d = import_module("layers").ConvTranspose2d


@ROI_MASK_HEAD_REGISTRY.register()
class SephMaskRCNNConvUpsampleHead(_mask_head.BaseMaskRCNNHead, nn.Sequential):
    """detectron2's ``MaskRCNNConvUpsampleHead`` with the norm on the deconv too, and no ReLU
    after a norm that has its own non-linearity.

    ::

        pooled ROI features [R, C, S, S]
          -> mask_fcn{i}: conv 3x3 -> norm -> ReLU     (i = 1..len(conv_dims) - 1)
          -> deconv: 2x2 stride 2 transposed conv      [R, D, 2S, 2S]
          -> deconv_norm                               (only with a norm)
          -> deconv_relu                               (unless the norm has a non-linearity)
          -> predictor: conv 1x1                       [R, K, 2S, 2S] mask logits

    With EvoNormS0 every "norm -> ReLU" is just EvoNormS0 (the log's activation "NA"). A
    normalised conv or deconv has no bias. With ``conv_norm=""`` the head equals detectron2's
    (same modules, state-dict names ``mask_fcn{i}``, ``deconv``, ``predictor``, outputs);
    with a norm it also normalises the deconv, as the original does, where detectron2 leaves
    the deconv unnormalised.

    Losses and inference are detectron2's (``BaseMaskRCNNHead``): ``loss_mask`` in training,
    ``pred_masks`` on the instances in inference. Training needs an ``EventStorage``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        conv_norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        loss_weight: float = 1.0,
        vis_period: int = 0,
    ):
        """
        Args:
            input_shape: shape of the pooled features (C channels).
            num_classes: K, foreground classes (1 for class-agnostic masks).
            conv_dims: N >= 1 widths: the N - 1 convs, then the deconv.
            conv_norm: a ``NORM`` config value (see :func:`sephnet.layers.norm.resolve_norm`)
                for the convs and the deconv; "" for none.
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
            loss_weight: multiplier of ``loss_mask``.
            vis_period: visualisation period of detectron2's mask loss (0 = off).
        """
        super().__init__(loss_weight=loss_weight, vis_period=vis_period)
        if len(conv_dims) < 1:
            raise ValueError(f"conv_dims={list(conv_dims)}; expected at least the deconv's width.")
        relu = not norm_includes_activation(conv_norm)

        self.conv_norm_relus = []
        channels = input_shape.channels
        for k, conv_dim in enumerate(conv_dims[:-1]):
            conv = conv_norm_act(
                channels,
                conv_dim,
                kernel_size=3,
                norm=conv_norm,
                norm_groups=norm_groups,
                norm_eps=norm_eps,
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            channels = conv_dim

        # Registration order is execution order (nn.Sequential).
        deconv_norm = build_norm(conv_norm, conv_dims[-1], groups=norm_groups, eps=norm_eps)
        self.deconv = _ConvTranspose2d(
            channels, conv_dims[-1], kernel_size=2, stride=2, padding=0, bias=deconv_norm is None
        )
        if deconv_norm is not None:
            self.deconv_norm = deconv_norm
        if relu:
            self.deconv_relu = nn.ReLU()
        self.predictor = Conv2d(conv_dims[-1], num_classes, kernel_size=1, stride=1, padding=0)

        for layer in self.conv_norm_relus + [self.deconv]:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_MASK_HEAD
        ret.update(
            input_shape=input_shape,
            conv_dims=[head.CONV_DIM] * (head.NUM_CONV + 1),  # + 1: the deconv
            conv_norm=head.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
            num_classes=1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
        return ret

    def layers(self, x):
        """``x[R, C, S, S]`` -> mask logits ``[R, K, 2S, 2S]``."""
        for layer in self:
            x = layer(x)
        return x
