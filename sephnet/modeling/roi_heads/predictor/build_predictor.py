"""Build the configured box predictor with the configured (or a given) box coder.

Every sephnet ROI head (standard, Cascade, GE) builds its predictor here. A registered
predictor's ``from_config(cfg, output_shapes, box2box_transform=None)`` builds the box coder
of ``MODEL.SEPH.BOX_CODER.NAME`` (sephv24) unless given one (Cascade's per-stage weights).
"""
from typing import Dict, Optional, Union

from torch import nn

from sephnet.backend import CfgNode, ShapeSpec
from sephnet.modeling.registry import SEPH_BOX_PREDICTOR_REGISTRY, get_registered

__all__ = ["build_box_predictor"]


def build_box_predictor(
    cfg: CfgNode,
    output_shapes: Union[Dict[str, ShapeSpec], ShapeSpec],
    *,
    box2box_transform: Optional[object] = None,
) -> nn.Module:
    """The predictor named by ``MODEL.SEPH.PREDICTOR.NAME`` for a box head's outputs.

    Args:
        cfg: a config prepared with ``add_sephnet_config``.
        output_shapes: the box head's ``output_shapes`` (or one ShapeSpec).
        box2box_transform: the coder to use; None: the predictor's ``from_config`` builds
            ``MODEL.SEPH.BOX_CODER.NAME``.

    Returns:
        The predictor, ``predictor_cls(cfg, output_shapes, box2box_transform=...)``.

    Raises:
        ValueError: the predictor name is not registered.
    """
    predictor_cls = get_registered(
        SEPH_BOX_PREDICTOR_REGISTRY, cfg.MODEL.SEPH.PREDICTOR.NAME, "MODEL.SEPH.PREDICTOR.NAME"
    )
    return predictor_cls(cfg, output_shapes, box2box_transform=box2box_transform)
