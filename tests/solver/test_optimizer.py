"""sephnet's optimizer: EvoNormS0 parameters get SOLVER.WEIGHT_DECAY_NORM, the rest is upstream."""
import torch
from torch import nn

from sephnet.backend import import_module
from sephnet.layers import EvoNormS0
from sephnet.solver import build_optimizer


def _model():
    return nn.Sequential(nn.Conv2d(3, 32, 3), EvoNormS0(32), nn.Conv2d(32, 32, 1), nn.GroupNorm(32, 32))


def _decay_of(optimizer):
    decay = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            decay[id(p)] = group["weight_decay"]
    return decay


def _cfg(sephnet_cfg, norm_decay):
    cfg = sephnet_cfg()
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = norm_decay
    return cfg


def test_evonorm_parameters_get_the_norm_weight_decay(sephnet_cfg):
    model = _model()
    decay = _decay_of(build_optimizer(_cfg(sephnet_cfg, 0.0), model))
    for p in model[1].parameters():  # EvoNormS0: weight, bias, v
        assert decay[id(p)] == 0.0
    assert decay[id(model[0].weight)] == 1e-4
    assert decay[id(model[3].weight)] == 0.0  # GroupNorm: upstream already treats it as a norm


def test_without_sephnet_norms_groups_equal_upstream(sephnet_cfg):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.Conv2d(8, 8, 1))
    cfg = _cfg(sephnet_cfg, 0.5)
    ours = build_optimizer(cfg, model)
    theirs = import_module("solver.build").build_optimizer(cfg, model)
    assert _decay_of(ours) == _decay_of(theirs)
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]


def test_every_parameter_is_optimised_exactly_once(sephnet_cfg):
    model = _model()
    optimizer = build_optimizer(_cfg(sephnet_cfg, 0.0), model)
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_decay_changes_only_non_norm_weights_in_a_step(sephnet_cfg):
    model = _model()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = _cfg(sephnet_cfg, 0.0)
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MOMENTUM = 0.0
    build_optimizer(cfg, model).step()
    after = list(model.parameters())
    # zero gradients: only weight decay moves a parameter; EvoNormS0's stay put
    for b, a, name in zip(before, after, [n for n, _ in model.named_parameters()]):
        if name.startswith("1."):
            assert torch.equal(a, b), name
    assert not torch.equal(after[0], before[0])  # conv weight decayed
