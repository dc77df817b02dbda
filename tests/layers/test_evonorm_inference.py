"""EvoNormS0Inference: EvoNormS0's formula (a float64 loop of it, and EvoNormS0 itself in float32
to rounding) in NCHW, channels-last and [N, C] inputs; EvoNormS0's own computation with
gradients or half precision; a copy of a trained layer that shares its parameters."""
import math

import pytest
import torch

from sephnet.layers.evonorm import EvoNormS0
from sephnet.layers.evonorm_inference import EvoNormS0Inference


def randomised(channels=8, groups=4, dtype=torch.float64):
    norm = EvoNormS0(channels, groups=groups, eps=1e-3).to(dtype)
    g = torch.Generator().manual_seed(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        norm.bias.copy_(torch.rand(channels, generator=g) - 0.5)
        norm.v.copy_(torch.rand(channels, generator=g) * 3 - 1)
    return norm


def formula(x, norm):
    """y = x sigmoid(v x) gamma / sqrt(population var of (group channels, positions) + eps) +
    beta, one group and sample at a time, from python floats."""
    out = torch.empty_like(x)
    per_group = norm.num_channels // norm.groups
    for n in range(x.shape[0]):
        for g in range(norm.groups):
            block = x[n, g * per_group:(g + 1) * per_group]
            values = block.flatten().tolist()
            mean = sum(values) / len(values)
            std = math.sqrt(sum((a - mean) ** 2 for a in values) / len(values) + norm.eps)
            channels = slice(g * per_group, (g + 1) * per_group)
            shape = (-1,) + (1,) * (x.dim() - 2)
            gamma, beta, v = (p[channels].view(shape) for p in (norm.weight, norm.bias, norm.v))
            out[n, channels] = block * torch.sigmoid(v * block) * gamma / std + beta
    return out


@pytest.mark.parametrize("shape", [(2, 8, 5, 6), (3, 8)], ids=["NCHW", "NC"])
def test_computes_the_formula_in_float64(shape):
    norm = EvoNormS0Inference.from_module(randomised())
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 2  # off-centre: the mean matters
    with torch.no_grad():
        torch.testing.assert_close(norm(x), formula(x, norm), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_equals_evonorm_to_rounding_and_keeps_the_memory_format(channels_last):
    plain = randomised(channels=64, groups=32, dtype=torch.float32)
    fast = EvoNormS0Inference.from_module(plain)
    x = torch.randn(6, 64, 14, 14) * 4 + 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = fast(x)
        torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("case", ["grad", "bfloat16"])
def test_runs_evonorms_own_computation(case):
    plain = randomised(dtype=torch.float32)
    fast = EvoNormS0Inference.from_module(plain)
    x = torch.randn(2, 8, 5, 5)
    if case == "bfloat16":
        x = x.bfloat16()
    with torch.set_grad_enabled(case == "grad"):
        assert torch.equal(fast(x), plain(x))
    if case == "grad":
        fast(x.requires_grad_()).sum().backward()
        assert plain.weight.grad is not None  # the parameters are the trained layer's own


def test_copy_shares_parameters_state_and_errors():
    plain = randomised().eval()
    fast = EvoNormS0Inference.from_module(plain)
    assert fast.weight is plain.weight and fast.v is plain.v and not fast.training
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert repr(fast) == repr(plain).replace("EvoNormS0", "EvoNormS0Inference")
    with torch.no_grad():
        assert fast(torch.zeros(0, 8, 3, 3, dtype=torch.float64)).shape == (0, 8, 3, 3)
        with pytest.raises(ValueError, match=r"expected input \[N, 8\]"):
            fast(torch.zeros(2, 6, 3, 3, dtype=torch.float64))
