"""detectron2's ResNet-FPN with sephnet's norms and the log's "P6 from C5" top block.

``build_seph_resnet_fpn_backbone`` is detectron2's ``build_resnet_fpn_backbone`` with two
changes, both at construction time (the FPN class itself is the backend's, unchanged):

* ``MODEL.FPN.NORM`` goes through :func:`sephnet.layers.norm.resolve_norm`, so
  ``"EvoNormS0"`` works there (groups/epsilon from ``MODEL.SEPH.EVONORM.*``);
* the top block is chosen by ``MODEL.SEPH.FPN.TOP_BLOCK`` (default detectron2's
  ``LastLevelMaxPool``, so default keys give detectron2's backbone).

How this differs from the original TF-OD-API-style FPN (SEPH_SPEC B §2.3)::

    original                                    this builder (detectron2's FPN)
    lateral l: 1x1 conv + bias, no norm/act     1x1 conv + FPN.NORM (no bias when normed)
    output  l: 3x3 conv + FPN.NORM (+ act)      3x3 conv + FPN.NORM, no activation
    P6: 3x3/2 conv on C5 + FPN.NORM (+ act)     same with TOP_BLOCK "LastLevelStridedConvs"
    top-down: nearest resize to C_l's size      nearest 2x upsampling (equal for inputs
                                                padded to the size divisibility)

With EvoNormS0 the laterals therefore also pass through a norm with a non-linearity, which
the original's do not; a faithful TF-style FPN is a separate component.
"""
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    BACKBONE_REGISTRY,
    FPN,
    LastLevelMaxPool,
    LastLevelP6P7,
    ShapeSpec,
    build_resnet_backbone,
)
from sephnet.layers.blocks import conv_norm_act
from sephnet.layers.norm import norm_includes_activation, resolve_norm
from sephnet.modeling.head_tricks import add_dropblock_to_stages

__all__ = [
    "TOP_BLOCKS",
    "LastLevelStridedConvs",
    "make_top_block",
    "build_seph_resnet_fpn_backbone",
]

# Values of MODEL.SEPH.FPN.TOP_BLOCK.
TOP_BLOCKS = ("LastLevelMaxPool", "LastLevelP6P7", "LastLevelStridedConvs")


class LastLevelStridedConvs(nn.Module):
    """Extra pyramid levels made by 3x3 stride-2 convs, starting from a backbone map.

    ::

        C5 [N, Cin, H, W]
          -> conv3x3/2 -> norm ------------------------------> P6 [N, Cout, H/2, W/2]
          -> (ReLU) -> conv3x3/2 -> norm --------------------> P7 [N, Cout, H/4, W/4]
          ...  (num_levels outputs)

    The log's sephv configs use one level from C5 with EvoNormS0 ("P6 = conv3x3/2 on C5").
    Each conv has a bias only without a norm, and no activation follows its norm: FPN
    outputs carry none in detectron2, and EvoNormS0 has its own non-linearity. Between two
    levels a ReLU is applied when the norm has no non-linearity, as in detectron2's
    ``LastLevelP6P7``.

    Follows detectron2's top-block contract: ``num_levels``, ``in_feature`` and
    ``forward(x) -> list of num_levels tensors``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_levels: int = 1,
        in_feature: str = "res5",
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            in_channels: channels of ``in_feature``.
            out_channels: channels of every output level.
            num_levels: number of levels to add (>= 1).
            in_feature: the feature the first conv reads: a bottom-up name such as
                ``"res5"`` (the raw C5), or an FPN output such as ``"p5"``.
            norm: a ``NORM`` config value (see :func:`sephnet.layers.norm.resolve_norm`).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
        """
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"LastLevelStridedConvs: num_levels={num_levels}; expected >= 1.")
        self.num_levels = num_levels
        self.in_feature = in_feature
        self.relu_between_levels = not norm_includes_activation(norm)
        convs = []
        for level in range(num_levels):
            conv = conv_norm_act(
                in_channels if level == 0 else out_channels,
                out_channels,
                kernel_size=3,
                stride=2,
                padding=1,
                norm=norm,
                activation=False,
                norm_groups=norm_groups,
                norm_eps=norm_eps,
            )
            weight_init.c2_xavier_fill(conv)
            convs.append(conv)
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """
        Args:
            x: ``Tensor[N, Cin, H, W]``, the ``in_feature`` map.

        Returns:
            ``num_levels`` tensors ``[N, Cout, H / 2^k, W / 2^k]``, k = 1..num_levels (rounded up).
        """
        outputs = []
        for level, conv in enumerate(self.convs):
            if level > 0 and self.relu_between_levels:
                x = F.relu(x)
            x = conv(x)
            outputs.append(x)
        return outputs


def make_top_block(
    name: str,
    *,
    bottom_up_shapes: Dict[str, ShapeSpec],
    in_feature: str,
    out_channels: int,
    num_levels: int = 1,
    norm: str = "",
    norm_groups: int = 32,
    norm_eps: float = 1e-5,
) -> nn.Module:
    """Build the FPN top block ``name`` (one of :data:`TOP_BLOCKS`).

    Args:
        name: ``"LastLevelMaxPool"`` (P6 = max-pool of P5; ignores the other arguments),
            ``"LastLevelP6P7"`` (detectron2's RetinaNet block on ``in_feature``) or
            ``"LastLevelStridedConvs"`` (see :class:`LastLevelStridedConvs`).
        bottom_up_shapes: the bottom-up backbone's ``output_shape()``.
        in_feature: the bottom-up feature the conv blocks start from (the last FPN input).
        out_channels: the FPN's output channels.
        num_levels: levels of ``LastLevelStridedConvs``.
        norm, norm_groups, norm_eps: norm of ``LastLevelStridedConvs``.

    Raises:
        ValueError: unknown ``name``, or ``in_feature`` not produced by the bottom-up.
    """
    if name not in TOP_BLOCKS:
        raise ValueError(
            f"MODEL.SEPH.FPN.TOP_BLOCK={name!r} is not a known top block; "
            f"expected one of {list(TOP_BLOCKS)}."
        )
    if name == "LastLevelMaxPool":
        return LastLevelMaxPool()
    if in_feature not in bottom_up_shapes:
        raise ValueError(
            f"Top block {name!r} reads {in_feature!r}, which the bottom-up backbone does not "
            f"produce (it has {sorted(bottom_up_shapes)})."
        )
    in_channels = bottom_up_shapes[in_feature].channels
    if name == "LastLevelP6P7":
        return LastLevelP6P7(in_channels, out_channels, in_feature=in_feature)
    return LastLevelStridedConvs(
        in_channels,
        out_channels,
        num_levels=num_levels,
        in_feature=in_feature,
        norm=norm,
        norm_groups=norm_groups,
        norm_eps=norm_eps,
    )


@BACKBONE_REGISTRY.register()
def build_seph_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's ResNet-FPN with ``MODEL.FPN.NORM`` resolved by sephnet and a chosen top block.

    Reads the keys of ``build_resnet_fpn_backbone`` (``MODEL.RESNETS.*``, ``MODEL.FPN.*``)
    plus ``MODEL.SEPH.EVONORM.GROUPS/EPS``, ``MODEL.SEPH.FPN.TOP_BLOCK/TOP_BLOCK_NUM_LEVELS``
    and ``MODEL.SEPH.DROPBLOCK.*`` (DropBlock after the named ResNet stages).
    The top block's convs start from the last FPN input (e.g. ``res5``).

    Returns:
        The backend's ``FPN`` (outputs ``p<stage>`` plus the top block's levels).
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    dropblock = cfg.MODEL.SEPH.DROPBLOCK
    add_dropblock_to_stages(
        bottom_up,
        dropblock.BACKBONE_STAGES,
        drop_prob=dropblock.DROP_PROB,
        block_size=dropblock.BACKBONE_BLOCK_SIZE,
        ramp_iters=dropblock.RAMP_ITERS,
    )
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    if not in_features:
        raise ValueError("MODEL.FPN.IN_FEATURES is empty; expected e.g. ['res2', ..., 'res5'].")
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    norm = cfg.MODEL.FPN.NORM
    norm_kwargs = {
        "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
        "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
    }
    top_block = make_top_block(
        cfg.MODEL.SEPH.FPN.TOP_BLOCK,
        bottom_up_shapes=bottom_up.output_shape(),
        in_feature=in_features[-1],
        out_channels=out_channels,
        num_levels=cfg.MODEL.SEPH.FPN.TOP_BLOCK_NUM_LEVELS,
        norm=norm,
        **norm_kwargs,
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=resolve_norm(
            norm, groups=norm_kwargs["norm_groups"], eps=norm_kwargs["norm_eps"]
        ),
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
