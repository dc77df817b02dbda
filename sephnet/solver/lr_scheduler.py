"""The learning-rate schedule: detectron2's, or the original's cosine after warm-up.

With ``MODEL.SEPH.SOLVER.COSINE_AFTER_WARMUP`` the multiplier of ``SOLVER.BASE_LR`` at
iteration t (W = WARMUP_ITERS, T = MAX_ITER, e = COSINE_END_LR / BASE_LR) is::

    t <  W:  warm-up (SOLVER.WARMUP_METHOD from WARMUP_FACTOR to 1), no cosine factor
    t >= W:  e + (1 - e) * (1 + cos(pi * (t - W) / (T - W))) / 2

Without it (detectron2) the cosine runs over [0, T] and warm-up scales its first W steps;
``COSINE_END_LR`` then only sets e.
"""
import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
)

from sephnet.backend import CfgNode, import_module

__all__ = ["build_lr_scheduler"]


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """detectron2's ``build_lr_scheduler`` unless the cosine keys of MODEL.SEPH.SOLVER differ
    from detectron2's defaults.

    Returns:
        A ``torch.optim.lr_scheduler._LRScheduler`` (detectron2's ``LRMultiplier``).

    Raises:
        ValueError: an unknown ``SOLVER.WARMUP_METHOD``.
    """
    solver, seph = cfg.SOLVER, cfg.MODEL.SEPH.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupCosineLR" or not (
        seph.COSINE_AFTER_WARMUP or seph.COSINE_END_LR
    ):
        return import_module("solver.build").build_lr_scheduler(cfg, optimizer)
    end = seph.COSINE_END_LR / solver.BASE_LR
    cosine = CosineParamScheduler(1.0, end)
    warmup_fraction = min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0)
    lr_scheduler = import_module("solver.lr_scheduler")
    if not seph.COSINE_AFTER_WARMUP:
        sched = lr_scheduler.WarmupParamScheduler(
            cosine, solver.WARMUP_FACTOR, warmup_fraction, solver.WARMUP_METHOD
        )
    else:
        if solver.WARMUP_METHOD == "linear":
            warmup = LinearParamScheduler(solver.WARMUP_FACTOR, 1.0)
        elif solver.WARMUP_METHOD == "constant":
            warmup = ConstantParamScheduler(solver.WARMUP_FACTOR)
        else:
            raise ValueError(
                f"SOLVER.WARMUP_METHOD={solver.WARMUP_METHOD!r}; expected 'linear' or 'constant'."
            )
        if warmup_fraction <= 0.0:
            sched = cosine
        elif warmup_fraction >= 1.0:
            sched = warmup
        else:
            sched = CompositeParamScheduler(
                [warmup, cosine],
                lengths=[warmup_fraction, 1.0 - warmup_fraction],
                interval_scaling=["rescaled", "rescaled"],
            )
    return lr_scheduler.LRMultiplier(optimizer, multiplier=sched, max_iter=solver.MAX_ITER)
