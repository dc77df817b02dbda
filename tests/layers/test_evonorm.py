"""EvoNormS0 against a scalar loop of the spec's formula (docs/components.md#evonorms0), and its
invariants."""
import copy
import math

import pytest
import torch

from sephnet.layers.evonorm import EvoNormS0
from sephnet.modeling.registry import SEPH_NORM_REGISTRY


def _loop_reference(x, weight, bias, v, groups, eps):
    """y = x * sigmoid(v x) * gamma / sqrt(pop. var over (group channels, H, W) + eps) + beta."""
    n_samples, channels = x.shape[:2]
    per_group = channels // groups
    xs = x.detach().reshape(n_samples, channels, -1).tolist()  # [N][C][H*W] python floats
    gamma, beta, slope = weight.tolist(), bias.tolist(), v.tolist()
    out = []
    for n in range(n_samples):
        out_n = []
        for g in range(groups):
            chans = range(g * per_group, (g + 1) * per_group)
            values = [a for c in chans for a in xs[n][c]]
            mean = sum(values) / len(values)
            var = sum((a - mean) ** 2 for a in values) / len(values)
            for c in chans:
                out_n.append(
                    [
                        a / (1.0 + math.exp(-slope[c] * a)) * gamma[c] / math.sqrt(var + eps)
                        + beta[c]
                        for a in xs[n][c]
                    ]
                )
        out.append(out_n)
    return torch.tensor(out, dtype=x.dtype).reshape(x.shape)


def _randomised(channels=8, groups=4, eps=1e-5):
    norm = EvoNormS0(channels, groups=groups, eps=eps).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.v.uniform_(-1.0, 2.0)
    return norm


def test_evonorm_parameters_start_at_identity_values():
    norm = EvoNormS0(64)
    assert norm.groups == 32 and norm.eps == 1e-5
    assert torch.equal(norm.weight, torch.ones(64))
    assert torch.equal(norm.bias, torch.zeros(64))
    assert torch.equal(norm.v, torch.ones(64))
    assert sorted(name for name, _ in norm.named_buffers()) == []  # no running statistics


def test_evonorm_4d_matches_loop_reference_in_float64():
    norm = _randomised(channels=8, groups=4, eps=1e-3)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64) * 3 + 1  # non-zero mean: x is not centred
    expected = _loop_reference(x, norm.weight, norm.bias, norm.v, groups=4, eps=1e-3)
    out = norm(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_evonorm_2d_normalises_over_group_channels_only():
    norm = _randomised(channels=8, groups=2)
    x = torch.randn(3, 8, dtype=torch.float64)
    expected = _loop_reference(x[:, :, None, None], norm.weight, norm.bias, norm.v, 2, 1e-5)
    torch.testing.assert_close(norm(x), expected[:, :, 0, 0], rtol=1e-12, atol=1e-12)


def test_evonorm_with_one_group_per_channel_uses_spatial_variance():
    # groups == channels: each channel is its own group, var over H*W of that channel.
    norm = EvoNormS0(3, groups=3, eps=0.0).double()
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.5]], [[-1.0, 0.0]]]], dtype=torch.float64)
    out = norm(x)
    for c, (a, b) in enumerate([(1.0, 3.0), (2.0, 2.5), (-1.0, 0.0)]):
        std = abs(a - b) / 2
        for pos, val in enumerate((a, b)):
            want = val / (1 + math.exp(-val)) / std
            assert out[0, c, 0, pos].item() == pytest.approx(want, rel=1e-12)


def test_evonorm_is_batch_independent():
    norm = _randomised()
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64)
    batched = norm(x)
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], norm(x[i : i + 1]), rtol=0, atol=1e-14)


def test_evonorm_train_equals_eval():
    norm = _randomised()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    train_out = norm.train()(x)
    eval_out = norm.eval()(x)
    assert torch.equal(train_out, eval_out)
    assert torch.equal(norm.train()(x), train_out)  # and nothing changed in between


def test_evonorm_gradients_reach_input_and_every_parameter():
    norm = _randomised()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    (norm(x) * torch.randn(2, 8, 5, 5, dtype=torch.float64)).sum().backward()
    for name, tensor in [("x", x), ("weight", norm.weight), ("bias", norm.bias), ("v", norm.v)]:
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        assert (tensor.grad.abs() > 0).all(), name


def test_evonorm_gradcheck():
    norm = _randomised(channels=4, groups=2)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (x,))


def test_evonorm_empty_batch():
    norm = EvoNormS0(8, groups=4)
    assert norm(torch.zeros(0, 8, 5, 5)).shape == (0, 8, 5, 5)
    assert norm(torch.zeros(0, 8)).shape == (0, 8)


def test_evonorm_half_precision_keeps_dtype_and_matches_float32():
    norm = _randomised().float()
    x = torch.randn(2, 8, 5, 5) * 4
    out = copy.deepcopy(norm).bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("channels,groups", [(8, 3), (8, 0), (8, 16), (30, 32)])
def test_evonorm_rejects_groups_that_do_not_divide_channels(channels, groups):
    with pytest.raises(ValueError, match=f"groups={groups}.*num_channels={channels}"):
        EvoNormS0(channels, groups=groups)


def test_evonorm_rejects_negative_eps():
    with pytest.raises(ValueError, match="eps"):
        EvoNormS0(8, groups=4, eps=-1.0)


@pytest.mark.parametrize("shape", [(2, 6, 3, 3), (2, 8, 3), (8,)])
def test_evonorm_rejects_wrong_input_shapes(shape):
    with pytest.raises(ValueError, match=r"expected input \[N, 8\]"):
        EvoNormS0(8, groups=4)(torch.zeros(shape))


def test_evonorm_is_registered_under_its_class_name():
    assert SEPH_NORM_REGISTRY.get("EvoNormS0") is EvoNormS0
    assert EvoNormS0.includes_activation is True
