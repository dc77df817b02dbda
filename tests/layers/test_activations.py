"""Head activations against their formulas (float64), and the ReLU swap."""
import math

import pytest
import torch
from torch import nn

from sephnet.layers.activations import HEAD_ACTIVATIONS, build_activation, replace_relu

X = torch.tensor([-4.0, -1.0, 0.0, 0.5, 1.0, 4.0], dtype=torch.float64)


def _formula(name, x):
    if name == "Mish":
        return x * math.tanh(math.log1p(math.exp(x)))
    if name == "Swish":
        return x / (1 + math.exp(-x))
    if name == "HardSwish":
        return x * min(max(x + 3, 0.0), 6.0) / 6
    return max(x, 0.0)


@pytest.mark.parametrize("name", sorted(HEAD_ACTIVATIONS))
def test_activation_matches_its_formula(name):
    got = build_activation(name)(X).tolist()
    assert got == pytest.approx([_formula(name, v) for v in X.tolist()], rel=1e-12, abs=1e-15)


def test_activation_values_by_hand():
    one = torch.tensor([1.0], dtype=torch.float64)
    assert build_activation("Swish")(one).item() == pytest.approx(0.7310585786300049)  # 1/(1+1/e)
    assert build_activation("Mish")(one).item() == pytest.approx(0.8650983882673103)  # tanh(ln(1+e))
    assert build_activation("HardSwish")(one).item() == pytest.approx(4 / 6)
    assert build_activation("HardSwish")(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 3.0]


def test_replace_relu_swaps_every_relu_module_and_keeps_the_state_dict():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    keys = list(net.state_dict())
    assert replace_relu(net, "Mish") == 2
    assert [type(m) for m in net.modules()].count(nn.Mish) == 2
    assert not any(type(m) is nn.ReLU for m in net.modules())
    assert list(net.state_dict()) == keys
    with pytest.raises(ValueError, match="'GELU'"):
        replace_relu(net, "GELU")
