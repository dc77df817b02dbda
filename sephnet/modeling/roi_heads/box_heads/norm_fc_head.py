"""The June baseline's box head: plain convs, then FCs that carry the box head's norm.

The log's "base line" rows used a single-output conv/FC head whose FCs were always
group-normalised; detectron2's ``FastRCNNConvFCHead`` applies ``MODEL.ROI_BOX_HEAD.NORM`` to
its convs only, so it cannot express that head (docs/components.md#baseline-box-head).
"""
from typing import Dict

import torch

from sephnet.backend import ShapeSpec, configurable
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_tower import ConvFCTower
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures

__all__ = ["NormFCBoxHead"]


@SEPH_BOX_HEAD_REGISTRY.register()
class NormFCBoxHead(ConvFCTower):
    """One tower shared by classes and boxes; only its FCs are normalised.

    ::

        x[R, C, S, S]
          -> num_conv x ( conv 3x3 SAME, conv_dim -> ReLU )             # no norm, with bias
          -> flatten -> num_fc x ( FC, fc_dim -> fc_norm -> ReLU )       # no bias with a norm
          -> y[R, fc_dim] --+--> cls
                            +--> box (the same tensor)

    With ``fc_norm="GN"`` (32 groups over each ROI's FC features) this is the log's June
    baseline head (0 convs, 2 FCs of 1024). After a norm with its own non-linearity
    (EvoNormS0) no ReLU is added. It is a :class:`ConvFCTower` (same layers, initialisation
    and ``state_dict`` names: ``conv{i}.*``, ``fc{j}.*``, 1-based) whose convs have no norm
    and whose FCs keep the ReLU after their norm.
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
        if num_fc < 1 or num_conv < 0:
            raise ValueError(
                f"NormFCBoxHead: num_conv={num_conv}, num_fc={num_fc}; expected num_conv >= 0 "
                "and num_fc >= 1."
            )
        super().__init__(
            input_shape,
            num_conv=num_conv,
            conv_dim=conv_dim,
            num_fc=num_fc,
            fc_dim=fc_dim,
            norm="",
            fc_norm=fc_norm,
            norm_groups=norm_groups,
            norm_eps=norm_eps,
            relu_after_norm=True,
        )

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
        y = super().forward(x)
        return DecoupledFeatures(cls=y, box=y)

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``{"cls": ShapeSpec(fc_dim), "box": ShapeSpec(fc_dim)}``."""
        return {"cls": self.output_shape, "box": self.output_shape}
