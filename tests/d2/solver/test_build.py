"""Optimizer parameter groups and gradient clipping."""
import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.solver import build_optimizer, get_default_optimizer_params
from sephnet.d2.solver.build import maybe_add_gradient_clipping, reduce_param_groups


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)             # weight + bias
        self.bn = nn.BatchNorm2d(4)                # norm weight + norm bias
        self.gn = nn.GroupNorm(2, 4)               # norm weight + norm bias
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2, bias=False)      # weight only
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.fc                      # the same parameters twice


def _hparams_by_param(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in groups:
        for p in g["params"]:
            assert names[id(p)] not in out, "parameter listed twice"
            out[names[id(p)]] = {k: v for k, v in g.items() if k != "params"}
    return out


def test_norm_and_bias_hyperparameters():
    model = _Tiny()
    groups = get_default_optimizer_params(
        model, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0,
        bias_lr_factor=2.0, weight_decay_bias=1e-5,
    )
    hp = _hparams_by_param(model, groups)
    assert set(hp) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "gn.weight",
                       "gn.bias", "ln.weight", "ln.bias", "fc.weight"}
    assert hp["conv.weight"] == {"lr": 0.1, "weight_decay": 1e-4}
    assert hp["fc.weight"] == {"lr": 0.1, "weight_decay": 1e-4}
    for n in ("bn.weight", "gn.weight", "ln.weight"):
        assert hp[n] == {"lr": 0.1, "weight_decay": 0.0}
    # Bias overrides apply after the norm rule (also to norm biases).
    for n in ("conv.bias", "bn.bias", "gn.bias", "ln.bias"):
        assert hp[n] == {"lr": 0.2, "weight_decay": 1e-5}
    # Equal hyper-parameters are merged: exactly three distinct groups.
    assert len(groups) == 3


def test_defaults_keep_optimizer_values_and_overrides_by_name():
    model = _Tiny()
    groups = get_default_optimizer_params(model, overrides={"weight": {"lr": 7.0}})
    hp = _hparams_by_param(model, groups)
    assert hp["conv.bias"] == {}
    assert hp["conv.weight"] == {"lr": 7.0}
    with pytest.raises(ValueError, match="base_lr"):
        get_default_optimizer_params(model, bias_lr_factor=2.0)
    with pytest.raises(ValueError, match="bias"):
        get_default_optimizer_params(model, weight_decay_bias=0.0, overrides={"bias": {}})


def test_reduce_param_groups_later_groups_win():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    out = reduce_param_groups([{"params": [a, b], "lr": 1.0}, {"params": [b], "lr": 2.0}])
    assert [(g["lr"], len(g["params"])) for g in out] == [(1.0, 1), (2.0, 1)]
    assert out[0]["params"][0] is a and out[1]["params"][0] is b


def test_build_optimizer_from_config():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.MOMENTUM = 0.8
    cfg.SOLVER.NESTEROV = True
    cfg.SOLVER.WEIGHT_DECAY = 1e-3
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    model = _Tiny()
    opt = build_optimizer(cfg, model)
    assert type(opt) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in opt.param_groups)
    hp = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert hp[id(model.bn.weight)] == 0.0 and hp[id(model.conv.weight)] == 1e-3
    assert sum(len(g["params"]) for g in opt.param_groups) == 9


@pytest.mark.parametrize("clip_type", ["value", "norm"])
def test_gradient_clipping_per_parameter(clip_type):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    opt = build_optimizer(cfg, model)
    assert type(opt).__name__ == "SGDWithGradientClip"
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    opt.step()
    if clip_type == "value":
        expected = torch.tensor([[-0.5, -0.5]])
    else:  # norm 5 scaled to 0.5
        expected = torch.tensor([[-0.3, -0.4]])
    assert torch.allclose(model.weight, expected, atol=1e-6)


def test_clipping_on_an_instance_and_bad_type():
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    assert maybe_add_gradient_clipping(cfg, opt) is opt
    assert type(opt).__name__ == "SGDWithGradientClip"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "max"
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    assert maybe_add_gradient_clipping(cfg, torch.optim.SGD) is torch.optim.SGD
