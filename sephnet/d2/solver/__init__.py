"""Optimizers and LR schedules of the portable core (detectron2.solver)."""
from .build import build_lr_scheduler, build_optimizer, get_default_optimizer_params
from .lr_scheduler import LRMultiplier, WarmupCosineLR, WarmupMultiStepLR, WarmupParamScheduler

__all__ = [
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "LRMultiplier",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
]
