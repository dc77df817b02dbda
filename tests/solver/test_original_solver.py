"""MODEL.SEPH.SOLVER: the original's cosine after warm-up, global-norm clipping and weight
decay on the backbone's convs only; detectron2's behaviour with default keys."""
import math
import os

import pytest
import torch
from torch import nn

import sephnet.modeling  # noqa: F401  (registration)
from sephnet.backend import build_model
from sephnet.config import validate_sephnet_config
from sephnet.solver import build_lr_scheduler, build_optimizer
from sephnet.solver.optimizer import backbone_conv_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(sephnet_cfg, **seph):
    cfg = sephnet_cfg()
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 0.0
    for key, value in seph.items():
        cfg.MODEL.SEPH.SOLVER[key] = value
    return cfg


def _lrs(cfg, steps):
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_after_warmup_by_value(sephnet_cfg):
    base, end, w, t_max = 0.02, 1e-6, 10, 100
    lrs = _lrs(_cfg(sephnet_cfg, COSINE_AFTER_WARMUP=True, COSINE_END_LR=end), t_max)
    for t in (0, 5, 9):  # linear warm-up from 0, no cosine factor
        assert lrs[t] == pytest.approx(base * t / w, rel=1e-9, abs=1e-12)
    for t in (10, 40, 55, 99):
        expected = end + (base - end) * 0.5 * (1 + math.cos(math.pi * (t - w) / (t_max - w)))
        assert lrs[t] == pytest.approx(expected, rel=1e-9)


def test_default_keys_give_detectron2s_cosine(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    ours = _lrs(cfg, 100)
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.02)
    from sephnet.backend import import_module

    upstream = import_module("solver.build").build_lr_scheduler(cfg, optimizer)
    theirs = []
    for _ in range(100):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        upstream.step()
    assert ours == theirs
    # detectron2's cosine starts at 0, so at the end of warm-up it has already decayed.
    assert ours[10] < 0.02 * 0.99


def _toy():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(1.0)
    return model


@pytest.mark.parametrize("global_norm", [True, False])
def test_global_norm_clipping_by_value(global_norm, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, CLIP_GLOBAL_NORM=global_norm)
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    model = _toy()
    optimizer = build_optimizer(cfg, model)
    # gradients: 3 on every entry of the first weight, 4 on the second (norms 6 and 8, joint 10)
    model[0].weight.grad = torch.full((2, 2), 3.0)
    model[1].weight.grad = torch.full((2, 2), 4.0)
    optimizer.step()
    step0, step1 = 1.0 - model[0].weight[0, 0].item(), 1.0 - model[1].weight[0, 0].item()
    if global_norm:  # one scale 1/10 for both: the 3:4 ratio survives
        assert (step0, step1) == pytest.approx((0.3, 0.4), rel=1e-6)
    else:  # detectron2: each clipped to norm 1 on its own
        assert (step0, step1) == pytest.approx((0.5, 0.5), rel=1e-6)


def test_row_model_decays_only_resnet_and_fpn_output_convs(sephnet_cfg):
    cfg = sephnet_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "coco", "Mask-RCNN-FPN-sephv14_10.yaml"))
    cfg.MODEL.DEVICE = "meta"
    validate_sephnet_config(cfg)
    assert cfg.MODEL.SEPH.SOLVER.WEIGHT_DECAY_SCOPE == "backbone_convs"
    with torch.device("meta"):
        model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == backbone_conv_weights(model)
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "backbone.fpn_output3.weight" in names and "backbone.fpn_lateral3.weight" not in names
    assert "backbone.bottom_up.res2.0.conv1.weight" in names
    assert not any(n.startswith(("roi_heads", "proposal_generator")) for n in names)
    assert not any("top_block" in n or n.endswith("bias") or "norm" in n for n in names)
    all_weights = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert decayed < all_weights


def test_clip_global_norm_needs_clipping_and_scope_is_checked(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, CLIP_GLOBAL_NORM=True)
    with pytest.raises(ValueError, match="CLIP_GLOBAL_NORM=True needs SOLVER.CLIP_GRADIENTS"):
        validate_sephnet_config(cfg)
    cfg = _cfg(sephnet_cfg, WEIGHT_DECAY_SCOPE="heads")
    with pytest.raises(ValueError, match="WEIGHT_DECAY_SCOPE='heads'"):
        validate_sephnet_config(cfg)
    cfg = _cfg(sephnet_cfg, COSINE_END_LR=0.5)
    with pytest.raises(ValueError, match="COSINE_END_LR=0.5"):
        validate_sephnet_config(cfg)
