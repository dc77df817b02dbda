"""SqueezeExcite: hand formula, bias FCs, ratio 16, errors."""
import pytest
import torch

from sephnet.layers.squeeze_excite import SqueezeExcite


def test_matches_hand_formula_per_channel():
    se = SqueezeExcite(32).double()
    assert se.squeeze.out_features == 2 and se.squeeze.bias is not None
    assert se.excite.bias is not None
    x = torch.randn(2, 32, 3, 4, dtype=torch.float64)
    y = se(x)
    for i in range(2):
        g = torch.tensor([x[i, c].sum() / 12 for c in range(32)], dtype=torch.float64)
        h = torch.relu(se.squeeze.weight @ g + se.squeeze.bias)
        s = torch.sigmoid(se.excite.weight @ h + se.excite.bias)
        for c in range(32):
            torch.testing.assert_close(y[i, c], x[i, c] * s[c])


def test_small_channel_counts_keep_one_hidden_unit_and_bad_args_raise():
    assert SqueezeExcite(8).squeeze.out_features == 1
    with pytest.raises(ValueError, match="ratio=0"):
        SqueezeExcite(8, ratio=0)
