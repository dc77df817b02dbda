"""SPPBackboneHook: spatial pyramid pooling on one level, YOLOv4-style (He et al. 2014 pooling
at stride 1, as in the log's SPP-PAN backbone), usually C5 before the neck.

::

    other keys ----------------------------------------------------------> unchanged
    level L: x -> concat(x, maxpool_k1(x), maxpool_k2(x), ...) (stride 1, same size)
               -> 1x1 conv (C * (1 + #pools) -> C) + NORM + ReLU -> same shape as x

The max-pools at stride 1 (kernels 5, 9, 13 by default) mix context from growing windows
into every position without changing the map's size, so the neck sees the same shapes.
"""
from typing import Dict, Optional, Sequence

import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooks.base import BackboneHook, pyramid_keys, pyramid_level
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

__all__ = ["SPPBackboneHook"]


@SEPH_BACKBONE_HOOK_REGISTRY.register()
class SPPBackboneHook(BackboneHook):
    """Spatial pyramid pooling on the pyramid level ``level`` (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        level: int = 5,
        pool_sizes: Sequence[int] = (5, 9, 13),
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shapes: shapes of the received dict.
            level: the pyramid level transformed (5 = res5 / C5).
            pool_sizes: odd max-pool kernels (stride 1, "same" padding).
            norm, norm_groups, norm_eps: norm of the 1x1 conv (a ``NORM`` name, "" = none).
        """
        super().__init__(input_shapes=input_shapes)
        keys = [k for k in pyramid_keys(input_shapes) if pyramid_level(k) == level]
        if len(keys) != 1:
            raise ValueError(f"SPPBackboneHook: no single level {level} among {sorted(input_shapes)}")
        if not pool_sizes or any(k < 1 or k % 2 == 0 for k in pool_sizes):
            raise ValueError(f"SPPBackboneHook: pool_sizes must be odd ints >= 1, got {list(pool_sizes)}")
        self.key = keys[0]
        self.pool_sizes = tuple(pool_sizes)
        channels = input_shapes[self.key].channels
        self.conv = conv_norm_act(
            channels * (1 + len(pool_sizes)), channels, kernel_size=1, norm=norm,
            norm_groups=norm_groups, norm_eps=norm_eps,
        )

    @classmethod
    def from_config(cls, cfg, *, input_shapes, bottom_up_shapes=None):
        return dict(
            input_shapes=input_shapes,
            level=cfg.MODEL.SEPH.SPP.LEVEL,
            pool_sizes=cfg.MODEL.SEPH.SPP.POOL_SIZES,
            norm=cfg.MODEL.SEPH.BACKBONE_HOOKS.NORM,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
        )

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C * (1 + #pools), H, W): x and its stride-1 max-pools."""
        return torch.cat([x] + [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.pool_sizes], dim=1)

    def forward(
        self, features: Dict[str, torch.Tensor], bottom_up: Optional[Dict[str, torch.Tensor]] = None
    ) -> Dict[str, torch.Tensor]:
        """Same keys and shapes; the chosen level replaced by its SPP output."""
        out = dict(features)
        out[self.key] = self.conv(self.pool(features[self.key]))
        return out
