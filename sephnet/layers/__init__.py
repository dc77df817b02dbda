"""sephnet's layers: EvoNormS0, the norm lookup by config name, conv/FC + norm + act blocks.

Importing this package registers ``EvoNormS0`` in ``SEPH_NORM_REGISTRY``.
"""
from sephnet.layers.evonorm import EvoNormS0
from sephnet.layers.norm import (
    build_norm,
    is_sephnet_norm,
    norm_includes_activation,
    resolve_norm,
    valid_norm_names,
)
from sephnet.layers.blocks import FCNormAct, conv_norm_act

__all__ = [
    "EvoNormS0",
    "build_norm",
    "is_sephnet_norm",
    "norm_includes_activation",
    "resolve_norm",
    "valid_norm_names",
    "FCNormAct",
    "conv_norm_act",
]
