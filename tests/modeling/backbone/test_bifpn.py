"""BiFPN and fast normalised fusion: weights normalise by value, cell by hand, declared shapes."""
import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec
from sephnet.modeling.backbone.bifpn import BiFPN, BiFPNCell
from sephnet.modeling.backbone.weighted_fusion import FastNormalizedFusion

from .hooks.conftest import check_declared, make_features

BOTTOM_UP = {f"res{l}": ShapeSpec(channels=4 * l, stride=2**l) for l in (3, 4, 5, 6)}


def test_fusion_weights_normalise_by_value():
    fusion = FastNormalizedFusion(3)
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([1.0, 3.0, -2.0]))
    w = fusion.normalized_weights()
    torch.testing.assert_close(w, torch.tensor([1.0, 3.0, 0.0]) / (4.0 + 1e-4))
    assert w.sum() < 1 and w.sum() > 1 - 1e-4
    xs = [torch.full((1, 2, 2, 2), v) for v in (1.0, 2.0, 100.0)]
    torch.testing.assert_close(fusion(xs), torch.full((1, 2, 2, 2), 7.0 / (4.0 + 1e-4)))
    init = FastNormalizedFusion(2)
    torch.testing.assert_close(init.normalized_weights(), torch.full((2,), 1 / (2 + 1e-4)))
    with pytest.raises(ValueError, match="got 2 inputs"):
        fusion(xs[:2])


def test_cell_matches_the_documented_recurrence_for_three_levels():
    cell = BiFPNCell(3, 4)
    for f in list(cell.td_fuse) + list(cell.bu_fuse):
        with torch.no_grad():
            f.weight.uniform_(0.2, 2.0)
    f0, f1, f2 = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 8, 8)

    def conv(m, x):
        return F.conv2d(x, m.weight, m.bias, padding=1)

    def wf(fusion, xs):
        w = torch.relu(fusion.weight)
        return sum(wi * x for wi, x in zip(w, xs)) / (w.sum() + 1e-4)

    up = lambda x: x.repeat_interleave(2, 2).repeat_interleave(2, 3)  # noqa: E731
    pool = lambda x: F.max_pool2d(x, 2)  # noqa: E731
    m1 = conv(cell.td_conv[0], wf(cell.td_fuse[0], [up(f0), f1]))
    m2 = conv(cell.td_conv[1], wf(cell.td_fuse[1], [up(m1), f2]))
    o1 = conv(cell.bu_conv[1], wf(cell.bu_fuse[1], [f1, pool(m2), m1]))
    o0 = conv(cell.bu_conv[0], wf(cell.bu_fuse[0], [pool(o1), f0]))
    out = cell([f0, f1, f2])
    for got, want in zip(out, [o0, o1, m2]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("cells", [1, 2])
def test_bifpn_outputs_match_declared_shapes_and_backward(cells):
    bifpn = BiFPN(input_shapes=BOTTOM_UP, in_features=["res3", "res4", "res5", "res6"],
                  out_channels=8, num_cells=cells, norm="EvoNormS0", norm_groups=4)
    shapes = bifpn.output_shape()
    assert list(shapes) == ["p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [8, 16, 32, 64]
    feats = make_features(BOTTOM_UP, image=128)
    out = bifpn(feats)
    check_declared(out, shapes, image=128)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in bifpn.parameters())
    assert bifpn.size_divisibility == 128


def test_bifpn_argument_errors():
    with pytest.raises(ValueError, match="size_divisibility=96"):
        BiFPN(input_shapes=BOTTOM_UP, in_features=["res3", "res4", "res5", "res6"],
              out_channels=8, size_divisibility=96)
    with pytest.raises(ValueError, match=">= 2 bottom-up maps"):
        BiFPN(input_shapes=BOTTOM_UP, in_features=["res3"], out_channels=8)
    with pytest.raises(ValueError, match="strides"):
        BiFPN(input_shapes=BOTTOM_UP, in_features=["res3", "res5"], out_channels=8)
