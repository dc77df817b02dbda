"""FRN + TLU against its formula (float64 loops), batch independence, registry wiring."""
import math

import pytest
import torch

from sephnet.layers.blocks import FCNormAct
from sephnet.layers.frn import FRN
from sephnet.layers.norm import get_norm, norm_includes_activation, norm_uses_groups, resolve_norm

D = torch.float64


def _reference(x, gamma, beta, tau, eps):
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        for j in range(c):
            nu2 = sum(float(x[i, j, a, b]) ** 2 for a in range(h) for b in range(w)) / (h * w)
            for a in range(h):
                for b in range(w):
                    y = gamma[j] * float(x[i, j, a, b]) / math.sqrt(nu2 + eps) + beta[j]
                    out[i, j, a, b] = max(y, tau[j])
    return out


def test_frn_matches_the_formula_in_float64():
    layer = FRN(3, eps=1e-6).double()
    gamma, beta, tau = [1.5, 0.5, -1.0], [0.1, -0.2, 0.0], [0.0, -0.3, 0.2]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma, dtype=D))
        layer.bias.copy_(torch.tensor(beta, dtype=D))
        layer.tau.copy_(torch.tensor(tau, dtype=D))
    x = torch.randn(2, 3, 4, 5, dtype=D)
    assert torch.allclose(layer(x), _reference(x, gamma, beta, tau, 1e-6), rtol=1e-12, atol=1e-12)


def test_frn_by_hand_on_a_two_pixel_map():
    # x = (3, 4): nu2 = (9 + 16) / 2 = 12.5 -> y = x / sqrt(12.5) = (0.8485, 1.1314); tau 0
    x = torch.tensor([[[[3.0, 4.0]]]], dtype=D)
    out = FRN(1, eps=0.0).double()(x)
    assert out.flatten().tolist() == pytest.approx([3 / math.sqrt(12.5), 4 / math.sqrt(12.5)])
    # TLU: negative responses are clipped at tau = 0
    assert FRN(1, eps=0.0).double()(-x).flatten().tolist() == [0.0, 0.0]


def test_frn_is_batch_independent_and_has_no_running_state():
    layer = FRN(4).double()
    x = torch.randn(3, 4, 5, 5, dtype=D)
    alone = layer(x[1:2])
    assert torch.equal(layer(x)[1:2], alone)
    layer.eval()
    assert torch.equal(layer(x[1:2]), alone)
    assert list(layer.state_dict()) == ["weight", "bias", "tau"]


def test_frn_on_a_1x1_map_follows_the_formula_and_fc_layers_refuse_it():
    x = torch.tensor([[[[2.0]], [[-0.5]]]], dtype=D)  # 1 x 1 maps: nu2 = x^2
    out = FRN(2, eps=1e-6).double()(x)
    assert out.flatten().tolist() == pytest.approx([2 / math.sqrt(4 + 1e-6), 0.0])
    with pytest.raises(ValueError, match="expected input"):
        FRN(4)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="FCNormAct: norm 'FRN'"):
        FCNormAct(8, 4, norm="FRN")


def test_frn_is_a_sephnet_norm_with_its_own_activation_and_no_groups():
    layer = get_norm("FRN", 6, groups=32, eps=1e-4)  # 6 channels: groups are not used
    assert isinstance(layer, FRN) and layer.eps == 1e-4
    assert callable(resolve_norm("FRN"))
    assert norm_includes_activation("FRN") and not norm_uses_groups("FRN")
    assert norm_uses_groups("EvoNormS0") and not norm_uses_groups("GN")
