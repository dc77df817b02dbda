"""The June baseline's box head: plain convs, then FCs that carry the box head's norm.

The log's "base line" rows used a single-output conv/FC head whose FCs were always
group-normalised; detectron2's ``FastRCNNConvFCHead`` applies ``MODEL.ROI_BOX_HEAD.NORM`` to
its convs only, so it cannot express that head (docs/components.md#baseline-box-head).
"""
from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.blocks import FCNormAct, conv_norm_act
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures

__all__ = ["NormFCBoxHead"]


@SEPH_BOX_HEAD_REGISTRY.register()
class NormFCBoxHead(nn.Module):
    """One tower shared by classes and boxes; only its FCs are normalised.

    ::

        x[R, C, S, S]
          -> num_conv x ( conv 3x3 SAME, conv_dim -> ReLU )             # no norm, with bias
          -> flatten -> num_fc x ( FC, fc_dim -> fc_norm -> ReLU )       # no bias with a norm
          -> y[R, fc_dim] --+--> cls
                            +--> box (the same tensor)

    With ``fc_norm="GN"`` (32 groups over each ROI's FC features) this is the log's June
    baseline head (0 convs, 2 FCs of 1024). After a norm with its own non-linearity
    (EvoNormS0) no ReLU is added. Initialisation as detectron2's box head (``c2_msra_fill``
    convs, ``c2_xavier_fill`` FCs). ``state_dict``: ``conv{i}.*``, ``fc{j}.*`` (1-based).
    """

    input_kind = "pooled"
    reads_decoupled = False
    normed_widths = (("FC_DIM", None),)

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_conv: int,
        conv_dim: int,
        num_fc: int,
        fc_dim: int,
        fc_norm: str = "GN",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shape: the pooled ROI features, ``ShapeSpec(channels=C, height=S, width=S)``.
            num_conv, conv_dim: 3x3 SAME convs (count >= 0) and their width.
            num_fc, fc_dim: FC layers (count >= 1) and their width.
            fc_norm: norm of the FCs (a ``NORM`` name; "" for none).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).

        Raises:
            ValueError: ``num_fc < 1`` or a negative ``num_conv``.
        """
        super().__init__()
        if num_fc < 1 or num_conv < 0:
            raise ValueError(
                f"NormFCBoxHead: num_conv={num_conv}, num_fc={num_fc}; expected num_conv >= 0 "
                "and num_fc >= 1."
            )
        channels = input_shape.channels
        for k in range(num_conv):
            conv = conv_norm_act(channels, conv_dim, kernel_size=3, norm="")
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{k + 1}", conv)
            channels = conv_dim
        in_features = channels * input_shape.height * input_shape.width
        for k in range(num_fc):
            fc = FCNormAct(
                in_features, fc_dim, norm=fc_norm, norm_groups=norm_groups, norm_eps=norm_eps
            )
            weight_init.c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            in_features = fc_dim
        self._output_shape = ShapeSpec(channels=fc_dim)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.SEPH.BOX_HEAD
        return {
            "input_shape": input_shape,
            "num_conv": head.NUM_CONV,
            "conv_dim": head.CONV_DIM,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "fc_norm": cfg.MODEL.ROI_BOX_HEAD.NORM,
            "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
            "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
        }

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """
        Args:
            x: pooled ROI features ``Tensor[R, C, S, S]``; R may be 0.

        Returns:
            ``DecoupledFeatures(y, y, None)`` with ``y: Tensor[R, fc_dim]``.
        """
        for layer in self.children():
            x = layer(x)
        return DecoupledFeatures(cls=x, box=x)

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``{"cls": ShapeSpec(fc_dim), "box": ShapeSpec(fc_dim)}``."""
        return {"cls": self._output_shape, "box": self._output_shape}
