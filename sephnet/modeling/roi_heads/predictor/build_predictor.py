"""Build the configured box predictor with the configured (or a given) box coder.

Every sephnet ROI head (standard, Cascade, GE) builds its predictor here, so the box coder
(``MODEL.SEPH.BOX_CODER.NAME``, sephv24) and Cascade's per-stage coder weights reach the
predictor through its own ``from_config`` arguments, without a second predictor class.
"""
from typing import Dict, Optional, Union

from torch import nn

from sephnet.backend import CfgNode, ShapeSpec
from sephnet.modeling.roi_heads.predictor.box_coders import build_box_coder
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
        box2box_transform: the coder to use; None builds ``MODEL.SEPH.BOX_CODER.NAME`` with
            ``build_box_coder(cfg)``.

    Returns:
        The predictor, built from its ``from_config`` arguments with ``box2box_transform``
        replaced.

    Raises:
        ValueError: the predictor name is not registered.
        TypeError: the predictor has no ``from_config`` taking a ``box2box_transform``.
    """
    predictor_cls = get_registered(
        SEPH_BOX_PREDICTOR_REGISTRY, cfg.MODEL.SEPH.PREDICTOR.NAME, "MODEL.SEPH.PREDICTOR.NAME"
    )
    from_config = getattr(predictor_cls, "from_config", None)
    args = from_config(cfg, output_shapes) if from_config is not None else None
    if not isinstance(args, dict) or "box2box_transform" not in args:
        raise TypeError(
            f"MODEL.SEPH.PREDICTOR.NAME={cfg.MODEL.SEPH.PREDICTOR.NAME!r}: the predictor needs a "
            "from_config(cfg, output_shapes) returning a 'box2box_transform' argument."
        )
    args["box2box_transform"] = (
        build_box_coder(cfg) if box2box_transform is None else box2box_transform
    )
    return predictor_cls(**args)
