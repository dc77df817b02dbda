"""detectron2's SGD optimizer, with sephnet's norm layers treated as norm layers.

detectron2's ``get_default_optimizer_params`` gives ``SOLVER.WEIGHT_DECAY_NORM`` only to the
norm classes it knows (BatchNorm, GroupNorm, LayerNorm, ...). sephnet's norms (e.g.
EvoNormS0, registered in ``SEPH_NORM_REGISTRY``) would otherwise get the full
``SOLVER.WEIGHT_DECAY``, while the original applied no decay to normalisation parameters
(SEPH_SPEC B §2.4, §2.22). Everything else is detectron2's ``build_optimizer`` unchanged:
same parameter groups, bias factors, gradient clipping and SGD settings.
"""
from typing import Any, Dict, List, Set

import torch

from sephnet.backend import CfgNode, import_module
from sephnet.modeling.registry import SEPH_NORM_REGISTRY

__all__ = ["build_optimizer", "sephnet_norm_parameters"]


def sephnet_norm_parameters(model: torch.nn.Module) -> Set[int]:
    """``id()`` of every parameter owned directly by a sephnet norm layer of ``model``."""
    norm_types = tuple(cls for _, cls in SEPH_NORM_REGISTRY)
    return {
        id(p)
        for module in model.modules()
        if norm_types and isinstance(module, norm_types)
        for p in module.parameters(recurse=False)
    }


def _with_norm_decay(
    groups: List[Dict[str, Any]], norm_ids: Set[int], weight_decay_norm: float
) -> List[Dict[str, Any]]:
    """Split each group so that sephnet-norm parameters carry ``weight_decay_norm``."""
    result = []
    for group in groups:
        norm = [p for p in group["params"] if id(p) in norm_ids]
        other = [p for p in group["params"] if id(p) not in norm_ids]
        if other:
            result.append({**group, "params": other})
        if norm:
            result.append({**group, "params": norm, "weight_decay": weight_decay_norm})
    return result


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """detectron2's ``build_optimizer(cfg, model)`` plus norm decay for sephnet's norms."""
    solver = import_module("solver.build")
    groups = solver.get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    groups = _with_norm_decay(groups, sephnet_norm_parameters(model), cfg.SOLVER.WEIGHT_DECAY_NORM)
    optimizer_cls = solver.maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    return optimizer_cls(
        groups,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
