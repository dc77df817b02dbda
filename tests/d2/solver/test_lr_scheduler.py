"""LR schedules: values at chosen iterations, computed by hand."""
import logging
import math

import pytest
import torch
from fvcore.common.param_scheduler import ConstantParamScheduler

from sephnet.d2.config import get_cfg
from sephnet.d2.solver import (
    LRMultiplier,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupParamScheduler,
    build_lr_scheduler,
)


def _optimizer(lr=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([p], lr=lr, momentum=0.9)


def _lrs(sched, opt, n):
    """LR used at iterations 0..n-1 (read before each scheduler step)."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _cfg(**solver):
    cfg = get_cfg()
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_multistep_with_linear_warmup_by_hand():
    cfg = _cfg(BASE_LR=0.5, MAX_ITER=20, STEPS=(10, 15), GAMMA=0.1, WARMUP_ITERS=4,
               WARMUP_FACTOR=0.2, WARMUP_METHOD="linear")
    opt = _optimizer(0.5)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 20)
    # Linear ramp from 0.2 * 0.5 to 0.5 over 4 iterations: 0.1 + 0.4 * t / 4.
    for t in range(4):
        assert lrs[t] == pytest.approx(0.1 + 0.4 * t / 4)
    for t in range(4, 10):
        assert lrs[t] == pytest.approx(0.5)
    for t in range(10, 15):
        assert lrs[t] == pytest.approx(0.05)
    for t in range(15, 20):
        assert lrs[t] == pytest.approx(0.005)


def test_constant_warmup_by_hand():
    cfg = _cfg(BASE_LR=2.0, MAX_ITER=10, STEPS=(8,), WARMUP_ITERS=3, WARMUP_FACTOR=0.01,
               WARMUP_METHOD="constant")
    opt = _optimizer(2.0)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 10)
    assert lrs[:3] == pytest.approx([0.02] * 3)
    assert lrs[3:8] == pytest.approx([2.0] * 5)
    assert lrs[8:] == pytest.approx([0.2] * 2)


def test_cosine_by_hand_with_and_without_base_lr_end():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=1.0, MAX_ITER=100,
               WARMUP_ITERS=0, WARMUP_FACTOR=1.0)
    opt = _optimizer(1.0)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 100)
    for t in (0, 25, 50, 99):
        assert lrs[t] == pytest.approx(0.5 * (1 + math.cos(math.pi * t / 100)))

    cfg.SOLVER.BASE_LR_END = 0.1
    opt = _optimizer(1.0)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 100)
    for t in (0, 50, 75):
        assert lrs[t] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 100)))


def test_cosine_warmup_ends_on_the_cosine_curve():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=1.0, MAX_ITER=100,
               WARMUP_ITERS=10, WARMUP_FACTOR=0.0, WARMUP_METHOD="linear")
    opt = _optimizer(1.0)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 12)
    end = 0.5 * (1 + math.cos(math.pi * 0.1))
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(end * 0.5)
    assert lrs[10] == pytest.approx(end)


def test_steps_beyond_max_iter_are_dropped_with_a_warning():
    cfg = _cfg(BASE_LR=1.0, MAX_ITER=10, STEPS=(5, 50), WARMUP_ITERS=0)
    opt = _optimizer(1.0)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    build_logger = logging.getLogger("sephnet.d2.solver.build")
    build_logger.addHandler(handler)
    try:
        lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 10)
    finally:
        build_logger.removeHandler(handler)
    assert any("SOLVER.STEPS" in r.getMessage() for r in records)
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.1)


def test_warmup_longer_than_training_is_capped():
    cfg = _cfg(BASE_LR=1.0, MAX_ITER=4, STEPS=(), WARMUP_ITERS=100, WARMUP_FACTOR=0.0)
    opt = _optimizer(1.0)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 4)
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="LR_SCHEDULER_NAME"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="Poly"), _optimizer())
    with pytest.raises(ValueError, match="warmup method"):
        build_lr_scheduler(_cfg(WARMUP_METHOD="exp"), _optimizer())
    with pytest.raises(ValueError, match="ParamScheduler"):
        LRMultiplier(_optimizer(), multiplier=lambda x: 1.0, max_iter=10)


def test_lr_multiplier_keeps_relative_group_lrs_and_resumes():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 3.0}], lr=1.0)
    mult = WarmupParamScheduler(ConstantParamScheduler(1.0), 0.5, 0.5, "constant")
    sched = LRMultiplier(opt, mult, max_iter=4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 1.5])
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 3.0])
    state = sched.state_dict()
    assert set(state) == {"base_lrs", "last_epoch"} and state["last_epoch"] == 2

    opt2 = torch.optim.SGD([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 3.0}], lr=1.0)
    sched2 = LRMultiplier(opt2, mult, max_iter=4)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    assert sched2.last_epoch == 3


def test_legacy_schedulers_by_hand():
    opt = _optimizer(1.0)
    sched = WarmupMultiStepLR(opt, milestones=[3, 5], gamma=0.5, warmup_factor=0.1,
                              warmup_iters=2, warmup_method="linear")
    assert _lrs(sched, opt, 6) == pytest.approx([0.1, 0.55, 1.0, 0.5, 0.5, 0.25])
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(_optimizer(), milestones=[5, 3])

    opt = _optimizer(1.0)
    sched = WarmupCosineLR(opt, max_iters=4, warmup_factor=0.5, warmup_iters=1,
                           warmup_method="constant")
    expected = [0.5 * 1.0] + [0.5 * (1 + math.cos(math.pi * t / 4)) for t in (1, 2, 3)]
    assert _lrs(sched, opt, 4) == pytest.approx(expected)
