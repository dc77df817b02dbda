"""Twin towers of widening VALID convs then FCs (SEPH_SPEC B §2.12 "V3"; not in the log).

::

                      +-- cls_tower --> cls
    x[R, C, S, S] ----+
                      +-- box_tower --> box        (same layers, own weights)

    tower: conv 3x3 VALID, conv_dim + 1 * width_step -> norm -> act     S   -> S-2
           conv 3x3 VALID, conv_dim + 2 * width_step -> norm -> act     S-2 -> S-4
           ... num_conv convs (log default 3: 7 -> 5 -> 3 -> 1)
           -> flatten -> num_fc x FC(fc_dim) + norm + act

Output ``[R, fc_dim]`` per tower (``[R, conv_dim + num_conv * width_step, S', S']`` when
``num_fc == 0``). No IoU tower (a predictor with an IoU branch reads ``box``). Out of the log
(B §4 item 30), offered because it is cheap; ``width_step`` (64 in the original) has no config
key.
"""
from typing import Dict

import fvcore.nn.weight_init as weight_init
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.blocks import FCNormAct
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_tower import conv_block, norm_kwargs_from_config
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures, split_head_input

__all__ = ["ValidConvFCHead"]


def _valid_tower(input_shape: ShapeSpec, *, num_conv, conv_dim, width_step, num_fc, fc_dim,
                 norms) -> nn.Sequential:
    tower = nn.Sequential()
    channels, size = input_shape.channels, input_shape.height
    for k in range(num_conv):
        width = conv_dim + (k + 1) * width_step
        tower.add_module(f"conv{k + 1}", conv_block(channels, width, padding=0, **norms))
        channels, size = width, size - 2
    in_features = channels * size * size
    for k in range(num_fc):
        fc = FCNormAct(in_features, fc_dim, **norms)
        weight_init.c2_xavier_fill(fc)
        tower.add_module(f"fc{k + 1}", fc)
        in_features = fc_dim
    if num_fc:
        tower.output_shape = ShapeSpec(channels=fc_dim)
    else:
        tower.output_shape = ShapeSpec(channels=channels, height=size, width=size)
    return tower


@SEPH_BOX_HEAD_REGISTRY.register()
class ValidConvFCHead(nn.Module):
    """Two identical towers of VALID convs (widening) then FCs; see the module docstring.

    ``state_dict``: ``cls_tower.conv{i}.*``, ``cls_tower.fc{j}.*``, same for ``box_tower``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_conv: int,
        conv_dim: int,
        num_fc: int,
        fc_dim: int,
        width_step: int = 64,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shape: pooled features ``ShapeSpec(channels=C, height=S, width=S)``.
            num_conv: VALID convs per tower; each removes 2 cells (``S - 2 num_conv >= 1``).
            conv_dim, width_step: conv k (1-based) has ``conv_dim + k * width_step`` channels.
            num_fc, fc_dim: FCs per tower and their width.
            norm, norm_groups, norm_eps: as :class:`FCClsConvBoxHead`.

        Raises:
            ValueError: no layer, or more convs than the pooled size allows.
        """
        super().__init__()
        size = input_shape.height
        if num_conv + num_fc < 1 or num_conv < 0 or num_fc < 0:
            raise ValueError(
                f"ValidConvFCHead: num_conv={num_conv}, num_fc={num_fc}; each tower needs "
                ">= 1 layer."
            )
        if size is None or size - 2 * num_conv < 1:
            raise ValueError(
                f"ValidConvFCHead: num_conv={num_conv} VALID 3x3 convs need a pooled size > "
                f"{2 * num_conv}; got {size} (MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION)."
            )
        kwargs = dict(num_conv=num_conv, conv_dim=conv_dim, width_step=width_step, num_fc=num_fc,
                      fc_dim=fc_dim,
                      norms=dict(norm=norm, norm_groups=norm_groups, norm_eps=norm_eps))
        self.cls_tower = _valid_tower(input_shape, **kwargs)
        self.box_tower = _valid_tower(input_shape, **kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.SEPH.BOX_HEAD
        return {
            "input_shape": input_shape,
            "num_conv": head.NUM_CONV,
            "conv_dim": head.CONV_DIM,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            **norm_kwargs_from_config(cfg),
        }

    def forward(self, x) -> DecoupledFeatures:
        """
        Args:
            x: pooled ``Tensor[R, C, S, S]`` or a hook's ``DecoupledFeatures``.

        Returns:
            ``DecoupledFeatures(cls, box, None)`` with the shapes of :attr:`output_shapes`.
        """
        cls_in, box_in, _ = split_head_input(x)
        return DecoupledFeatures(cls=self.cls_tower(cls_in), box=self.box_tower(box_in))

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``"cls"`` and ``"box"`` tower output shapes."""
        return {"cls": self.cls_tower.output_shape, "box": self.box_tower.output_shape}
