"""The shared conv head of the log's "sephv10 (shared head)" row (docs/components.md#box-heads).

The original ("FastRCNNConvHead") ran inside a Res5ROIHeads-style flow whose pooled
features also fed the mask head; here it is only the box head's topology. The original's
optional mask branch (one more 3x3 SAME conv, 256, when MASK_ON) is not part of this head:
the ROI heads feed the mask head.
"""
from typing import Dict

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_tower import (
    ConvFCTower,
    conv_block,
    norm_kwargs_from_config,
)
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures

__all__ = ["SharedConvHead"]


@SEPH_BOX_HEAD_REGISTRY.register()
class SharedConvHead(nn.Module):
    """Shared 3x3 convs, then one 3x3 conv per branch: SAME for classes, VALID for boxes.

    ::

                          shared:                      +-- cls_conv: conv3x3 SAME(branch_dim)
                          num_conv x conv3x3           |   +norm+act --> cls [R, B, S, S]
        x[R, C, S, S] --> SAME(conv_dim)+norm+act -----+
                                                       +-- box_conv: conv3x3 VALID(branch_dim)
                                                           +norm+act --> box [R, B, S-2, S-2]

    (B = ``branch_dim``.)
    With the log's 7x7 pooling the class features are 7x7 and the box features 5x5
    (predictor inputs 12544 and 6400 for 256 channels). sephv10: 4 shared convs of 384,
    branches of 256. No IoU tower.

    ``state_dict``: ``shared.conv{i}.*``, ``cls_conv.*``, ``box_conv.*``.
    """

    #: Reads one pooled map only (not a hook's DecoupledFeatures nor the ContextPair).
    input_kind = "pooled"
    reads_decoupled = False
    normed_widths = (("CONV_DIM", "NUM_CONV"), ("BRANCH_CONV_DIM", None))

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_conv: int,
        conv_dim: int,
        branch_dim: int = 256,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        relu_after_norm: bool = False,
    ):
        """
        Args:
            input_shape: the pooled ROI features, ``ShapeSpec(channels=C, height=S,
                width=S)`` with S >= 3 (the VALID conv removes a border of 1).
            num_conv, conv_dim: shared 3x3 SAME convs (may be 0) and their width.
            branch_dim: width of the class and box branch convs (256 in the log).
            norm: norm after every conv ("" = none, then a ReLU follows each layer instead).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).

        Raises:
            ValueError: S < 3 or unknown, ``branch_dim < 1``, or as :class:`ConvFCTower`.
        """
        super().__init__()
        size = (input_shape.height, input_shape.width)
        if any(s is None or s < 3 for s in size):
            raise ValueError(
                f"SharedConvHead: the VALID box conv needs pooled features of at least 3x3; "
                f"got {input_shape}."
            )
        if not isinstance(branch_dim, int) or branch_dim < 1:
            raise ValueError(f"SharedConvHead: branch_dim={branch_dim!r}; expected an int >= 1.")
        norms = dict(
            norm=norm, norm_groups=norm_groups, norm_eps=norm_eps, relu_after_norm=relu_after_norm
        )
        self.shared = ConvFCTower(
            input_shape, num_conv=num_conv, conv_dim=conv_dim, num_fc=0, fc_dim=1, **norms
        )
        channels = self.shared.output_shape.channels
        self.cls_conv = conv_block(channels, branch_dim, padding=1, **norms)
        self.box_conv = conv_block(channels, branch_dim, padding=0, **norms)
        self._output_shapes = {
            "cls": ShapeSpec(channels=branch_dim, height=size[0], width=size[1]),
            "box": ShapeSpec(channels=branch_dim, height=size[0] - 2, width=size[1] - 2),
        }

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.SEPH.BOX_HEAD
        return {
            "input_shape": input_shape,
            "num_conv": head.NUM_CONV,
            "conv_dim": head.CONV_DIM,
            "branch_dim": head.BRANCH_CONV_DIM,
            **norm_kwargs_from_config(cfg),
        }

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """
        Args:
            x: pooled ROI features ``Tensor[R, C, S, S]``.

        Returns:
            ``DecoupledFeatures(cls[R, branch_dim, S, S], box[R, branch_dim, S-2, S-2],
            None)``.
        """
        shared = self.shared(x)
        return DecoupledFeatures(cls=self.cls_conv(shared), box=self.box_conv(shared))

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``{"cls": ShapeSpec, "box": ShapeSpec}``; the box branch is 2 pixels smaller."""
        return dict(self._output_shapes)
