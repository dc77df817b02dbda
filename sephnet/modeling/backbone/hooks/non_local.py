"""NonLocalBackboneHook: a non-local block on every pyramid level >= 4
(docs/components.md#backbone-hooks).

::

    {res2/p2, res3/p3} --------------------------------------> unchanged
    {res4/p4, res5/p5, ...} -> NonLocalBlock (one per level) -> same shape

Versions (``MODEL.SEPH.BACKBONE_HOOKS.NON_LOCAL.VERSION``), all one class:

* ``"current"`` (log rows from 2020-10-30: sephv14_13/19/31/32, sephv30_1, bifpnv2_1): Q/K/V
  as wide as the input, 1 head, plain residual, then the hooks' norm (EvoNormS0), no act;
* ``"old"`` (June rows "use nolocal", recipe "1)"): widths C/8, C/8, C/2, 1 head,
  gamma-weighted residual (gamma = 0 at init), GroupNorm(32) then ReLU;
* ``"V2"``: widths 128/128/128, 2 heads, plain residual, the hooks' norm, no act.

The log's V3 (attention on a resized map with positional embedding) is not used by any log
row and is left out.
"""
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.non_local import NonLocalBlock
from sephnet.modeling.backbone.hooks.base import BackboneHook
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

__all__ = ["NON_LOCAL_VERSIONS", "NonLocalBackboneHook"]

# VERSION -> NonLocalBlock arguments; "norm" None means the hooks' NORM key.
NON_LOCAL_VERSIONS = {
    "current": dict(multipliers=(1, 1, 1), dims=None, num_heads=1, weighted_residual=False,
                    norm=None, activation=False),
    "old": dict(multipliers=(8, 8, 2), dims=None, num_heads=1, weighted_residual=True,
                norm="GN", activation=True),
    "V2": dict(multipliers=None, dims=(128, 128, 128), num_heads=2, weighted_residual=False,
               norm=None, activation=False),
}


@SEPH_BACKBONE_HOOK_REGISTRY.register()
class NonLocalBackboneHook(BackboneHook):
    """Replace each pyramid level >= ``min_level`` by a :class:`NonLocalBlock` of it."""

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        min_level: int = 4,
        multipliers: Optional[Sequence[int]] = (1, 1, 1),
        dims: Optional[Sequence[int]] = None,
        num_heads: int = 1,
        weighted_residual: bool = False,
        norm: str = "",
        activation: bool = False,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shapes: shapes of the received dict.
            min_level: first level transformed (4: C4/P4 and coarser, as the log).
            multipliers, dims, num_heads, weighted_residual, norm, activation, norm_groups,
                norm_eps: arguments of :class:`sephnet.layers.non_local.NonLocalBlock`.
        """
        super().__init__(input_shapes=input_shapes)
        self.blocks = nn.ModuleDict(
            {
                key: NonLocalBlock(
                    input_shapes[key].channels,
                    multipliers=multipliers,
                    dims=dims,
                    num_heads=num_heads,
                    weighted_residual=weighted_residual,
                    norm=norm,
                    activation=activation,
                    norm_groups=norm_groups,
                    norm_eps=norm_eps,
                )
                for key in self.levels_from(min_level)
            }
        )

    @classmethod
    def from_config(cls, cfg, *, input_shapes, bottom_up_shapes=None):
        node = cfg.MODEL.SEPH.BACKBONE_HOOKS
        version = node.NON_LOCAL.VERSION
        if version not in NON_LOCAL_VERSIONS:
            raise ValueError(
                f"MODEL.SEPH.BACKBONE_HOOKS.NON_LOCAL.VERSION={version!r}; expected one of "
                f"{sorted(NON_LOCAL_VERSIONS)}."
            )
        args = dict(NON_LOCAL_VERSIONS[version])
        if args["norm"] is None:
            args["norm"] = node.NORM
        return dict(
            input_shapes=input_shapes,
            min_level=node.MIN_LEVEL,
            norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
            norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
            **args,
        )

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        bottom_up: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: name -> ``Tensor[N, C_k, H_k, W_k]`` with the keys of ``input_shapes``.
            bottom_up: unused.

        Returns:
            The same keys and shapes; levels >= ``min_level`` attended.
        """
        return {k: self.blocks[k](v) if k in self.blocks else v for k, v in features.items()}
