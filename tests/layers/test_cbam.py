"""CBAM (log variant): matches a loop-by-loop hand computation; shapes, errors, gradients."""
import math

import pytest
import torch

from sephnet.layers.cbam import CBAM


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def _reference(block, x):
    """Scalar-loop CBAM: one MLP on concat[GAP, GMP], then the kxk spatial gate."""
    n, c, h, w = x.shape
    w1, b1 = block.squeeze.weight.tolist(), block.squeeze.bias.tolist()
    w2, b2 = block.excite.weight.tolist(), block.excite.bias.tolist()
    ks = block.spatial.weight.shape[-1]
    wk, bk = block.spatial.weight[0].tolist(), block.spatial.bias.item()
    out = torch.zeros_like(x)
    for r in range(n):
        vals = [[[x[r, ch, i, j].item() for j in range(w)] for i in range(h)] for ch in range(c)]
        gap = [sum(sum(row) for row in vals[ch]) / (h * w) for ch in range(c)]
        gmp = [max(max(row) for row in vals[ch]) for ch in range(c)]
        g = gap + gmp
        hidden = [
            max(0.0, sum(w1[k][m] * g[m] for m in range(2 * c)) + b1[k]) for k in range(len(b1))
        ]
        gate = [_sigmoid(sum(w2[ch][k] * hidden[k] for k in range(len(hidden))) + b2[ch])
                for ch in range(c)]
        y = [[[vals[ch][i][j] * gate[ch] for j in range(w)] for i in range(h)] for ch in range(c)]
        mean_map = [[sum(y[ch][i][j] for ch in range(c)) / c for j in range(w)] for i in range(h)]
        max_map = [[max(y[ch][i][j] for ch in range(c)) for j in range(w)] for i in range(h)]
        maps = [mean_map, max_map]
        p = ks // 2
        for i in range(h):
            for j in range(w):
                acc = bk
                for m in range(2):
                    for di in range(ks):
                        for dj in range(ks):
                            ii, jj = i + di - p, j + dj - p
                            if 0 <= ii < h and 0 <= jj < w:
                                acc += wk[m][di][dj] * maps[m][ii][jj]
                s = _sigmoid(acc)
                for ch in range(c):
                    out[r, ch, i, j] = y[ch][i][j] * s
    return out


def test_cbam_matches_hand_computation():
    torch.manual_seed(0)
    block = CBAM(8, ratio=4)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 8, 5, 4)
    torch.testing.assert_close(block(x), _reference(block, x), rtol=1e-5, atol=1e-5)


def test_channel_mlp_reads_the_concatenation_not_a_shared_mlp():
    block = CBAM(32, ratio=16)
    assert block.squeeze.in_features == 64 and block.squeeze.out_features == 2
    assert block.excite.out_features == 32
    assert block.spatial.in_channels == 2 and block.spatial.out_channels == 1
    assert block.spatial.kernel_size == (7, 7) and block.spatial.bias is not None


def test_shapes_empty_input_and_gradients():
    block = CBAM(16)
    x = torch.randn(3, 16, 7, 7, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in block.parameters())
    assert block(torch.zeros(0, 16, 7, 7)).shape == (0, 16, 7, 7)


@pytest.mark.parametrize("kwargs", [dict(channels=0), dict(channels=8, ratio=0),
                                    dict(channels=8, kernel_size=4)])
def test_bad_arguments_raise(kwargs):
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError):
        CBAM(channels, **kwargs)
