"""detectron2's SGD optimizer, with sephnet's norm layers treated as norm layers, and the
original's weight-decay scope and global-norm clipping behind ``MODEL.SEPH.SOLVER`` keys.

detectron2's ``get_default_optimizer_params`` gives ``SOLVER.WEIGHT_DECAY_NORM`` only to the
norm classes it knows (BatchNorm, GroupNorm, LayerNorm, ...). sephnet's norms (e.g.
EvoNormS0, registered in ``SEPH_NORM_REGISTRY``) would otherwise get the full
``SOLVER.WEIGHT_DECAY``, while the original applied no decay to normalisation parameters
(docs/components.md#solver). With default keys everything else is detectron2's
``build_optimizer`` unchanged: same parameter groups, bias factors, gradient clipping and SGD
settings. ``WEIGHT_DECAY_SCOPE: backbone_convs`` keeps the decay on the backbone's conv
weights only; ``CLIP_GLOBAL_NORM`` clips all gradients by their joint norm before each step.
``OPTIMIZER: AdamW`` swaps SGD for AdamW (DETR's) and ``BACKBONE_LR_FACTOR`` scales the
backbone's learning rate.
"""
import re
from typing import Any, Dict, List, Set

import torch

from sephnet.backend import CfgNode, import_module
from sephnet.modeling.registry import SEPH_NORM_REGISTRY

__all__ = ["build_optimizer", "sephnet_norm_parameters", "backbone_conv_weights"]

# Convs of the backbone that the original decayed: the bottom-up ResNet's, and the FPN's 3x3
# output convs (detectron2's FPN: fpn_output<k>; sephnet's TF-style FPN: outputs.<name>).
_DECAYED_BACKBONE_CONV = re.compile(r"(^|\.)bottom_up\.|(^|\.)fpn_output\d+$|(^|\.)outputs\.[^.]+$")


def sephnet_norm_parameters(model: torch.nn.Module) -> Set[int]:
    """``id()`` of every parameter owned directly by a sephnet norm layer of ``model``."""
    norm_types = tuple(cls for _, cls in SEPH_NORM_REGISTRY)
    return {
        id(p)
        for module in model.modules()
        if norm_types and isinstance(module, norm_types)
        for p in module.parameters(recurse=False)
    }


def backbone_conv_weights(model: torch.nn.Module) -> Set[int]:
    """``id()`` of the conv weights the original decayed: the bottom-up ResNet's convs and
    the FPN's 3x3 output convs of ``model.backbone`` (none of a model without a backbone)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return set()
    return {
        id(module.weight)
        for name, module in backbone.named_modules()
        if isinstance(module, torch.nn.Conv2d) and _DECAYED_BACKBONE_CONV.search(name)
    }


def _with_decay_only_on(groups: List[Dict[str, Any]], decayed: Set[int]) -> List[Dict[str, Any]]:
    """Split each group so that only parameters in ``decayed`` keep their weight decay."""
    result = []
    for group in groups:
        kept = [p for p in group["params"] if id(p) in decayed]
        other = [p for p in group["params"] if id(p) not in decayed]
        if kept:
            result.append({**group, "params": kept})
        if other:
            result.append({**group, "params": other, "weight_decay": 0.0})
    return result


def _with_global_norm_clipping(optimizer_cls, max_norm: float):
    """``optimizer_cls`` whose ``step`` first scales all gradients so their joint L2 norm is
    at most ``max_norm`` (``torch.nn.utils.clip_grad_norm_`` over every group)."""

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return optimizer_cls.step(self, closure)

    return type(optimizer_cls.__name__ + "WithGlobalNormClipping", (optimizer_cls,), {"step": step})


def _with_lr_factor_on(groups: List[Dict[str, Any]], scaled: Set[int], factor: float) -> List[Dict[str, Any]]:
    """Split each group so that parameters in ``scaled`` have their ``lr`` times ``factor``."""
    result = []
    for group in groups:
        inside = [p for p in group["params"] if id(p) in scaled]
        other = [p for p in group["params"] if id(p) not in scaled]
        if other:
            result.append({**group, "params": other})
        if inside:
            result.append({**group, "params": inside, "lr": group["lr"] * factor})
    return result


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
    """detectron2's ``build_optimizer(cfg, model)`` plus norm decay for sephnet's norms, and
    ``MODEL.SEPH.SOLVER.WEIGHT_DECAY_SCOPE`` / ``CLIP_GLOBAL_NORM`` / ``OPTIMIZER`` /
    ``BACKBONE_LR_FACTOR``."""
    solver = import_module("solver.build")
    groups = solver.get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    groups = _with_norm_decay(groups, sephnet_norm_parameters(model), cfg.SOLVER.WEIGHT_DECAY_NORM)
    seph = cfg.MODEL.SEPH.SOLVER
    if seph.WEIGHT_DECAY_SCOPE == "backbone_convs":
        groups = _with_decay_only_on(groups, backbone_conv_weights(model))
    if seph.BACKBONE_LR_FACTOR != 1.0 and getattr(model, "backbone", None) is not None:
        backbone = {id(p) for p in model.backbone.parameters()}
        groups = _with_lr_factor_on(groups, backbone, seph.BACKBONE_LR_FACTOR)
    if seph.OPTIMIZER == "AdamW":
        base_cls, extra = torch.optim.AdamW, {}
    else:
        base_cls, extra = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    if seph.CLIP_GLOBAL_NORM:
        optimizer_cls = _with_global_norm_clipping(base_cls, cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE)
    else:
        optimizer_cls = solver.maybe_add_gradient_clipping(cfg, base_cls)
    return optimizer_cls(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **extra)
