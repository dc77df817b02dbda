"""SEBackboneHook: squeeze-and-excitation on every pyramid level >= 4
(docs/components.md#backbone-hooks).

::

    {res2/p2, res3/p3} ----------------------------------> unchanged
    {res4/p4, res5/p5, ...} -> SqueezeExcite (per level) -> x * gate, same shape

Used before the FPN on C4, C5 in log rows sephv14_26 and sephv14_27.
"""
from typing import Dict, Optional

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.squeeze_excite import SqueezeExcite
from sephnet.modeling.backbone.hooks.base import BackboneHook
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

__all__ = ["SEBackboneHook"]


@SEPH_BACKBONE_HOOK_REGISTRY.register()
class SEBackboneHook(BackboneHook):
    """Gate the channels of each pyramid level >= ``min_level`` with its own SE block."""

    @configurable
    def __init__(self, *, input_shapes: Dict[str, ShapeSpec], min_level: int = 4, ratio: int = 16):
        """
        Args:
            input_shapes: shapes of the received dict.
            min_level: first level transformed (4 in the log).
            ratio: hidden-width reduction of the SE blocks (16 in the log).
        """
        super().__init__(input_shapes=input_shapes)
        self.blocks = nn.ModuleDict(
            {
                key: SqueezeExcite(input_shapes[key].channels, ratio=ratio)
                for key in self.levels_from(min_level)
            }
        )

    @classmethod
    def from_config(cls, cfg, *, input_shapes, bottom_up_shapes=None):
        node = cfg.MODEL.SEPH.BACKBONE_HOOKS
        return dict(input_shapes=input_shapes, min_level=node.MIN_LEVEL, ratio=node.SE.RATIO)

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        bottom_up: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Same keys and shapes as ``features``; levels >= ``min_level`` re-weighted."""
        return {k: self.blocks[k](v) if k in self.blocks else v for k, v in features.items()}
