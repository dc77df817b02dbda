"""DropBlock: drop-rate statistics, square blocks inside the map, rescaling, eval identity."""
import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import EventStorage
from sephnet.layers.dropblock import DropBlock2d, dropblock_gamma


def test_gamma_by_hand():
    # 0.1 / 9 * 256 / 196 = 0.0145125...
    assert dropblock_gamma(0.1, 3, 16, 16) == pytest.approx(0.1 / 9 * 256 / 196)


def test_dropped_fraction_matches_the_seed_probability():
    b, h, p = 3, 16, 0.1
    layer = DropBlock2d(drop_prob=p, block_size=b)
    x = torch.ones(200, 8, h, h)
    dropped = 1 - layer.block_mask(x, p)
    # A unit is dropped unless none of the c(u) seed positions covering it fires:
    # expected fraction = mean_u 1 - (1 - gamma)^c(u) (c = 9 inside, fewer at the border).
    gamma = dropblock_gamma(p, b, h, h)
    cover = F.conv2d(F.pad(torch.ones(1, 1, h - b + 1, h - b + 1), [b - 1] * 4), torch.ones(1, 1, b, b))
    expected = (1 - (1 - gamma) ** cover).mean().item()  # 0.0951
    # ~4500 seeds of 9 units over 409600 units: std of the fraction ~0.0015
    assert dropped.mean().item() == pytest.approx(expected, abs=0.006)
    assert abs(expected - p) < 0.01


def test_dropped_units_form_whole_blocks_inside_the_map():
    b = 3
    dropped = 1 - DropBlock2d(drop_prob=0.2, block_size=b).block_mask(torch.ones(4, 2, 12, 10), 0.2)
    # morphological opening with a b x b square leaves the dropped set unchanged: every
    # dropped unit lies in some all-dropped b x b window that fits in the map
    fits = F.avg_pool2d(dropped, b, stride=1) > 1 - 1e-6
    reopened = F.max_pool2d(F.pad(fits.float(), [b - 1] * 4), b, stride=1)
    assert torch.equal(reopened, dropped)
    assert dropped.sum() > 0


def test_output_is_rescaled_to_keep_the_sum_and_eval_is_identity():
    layer = DropBlock2d(drop_prob=0.3, block_size=5)
    x = torch.ones(2, 3, 20, 20, dtype=torch.float64)
    y = layer(x)
    assert y.sum().item() == pytest.approx(x.numel(), rel=1e-12)
    assert set(y.unique().tolist()) <= {0.0, float(y.max())}
    layer.eval()
    assert layer(x) is x
    assert DropBlock2d(drop_prob=0.0, block_size=3)(x) is x


def test_block_larger_than_the_map_is_clipped():
    y = DropBlock2d(drop_prob=0.5, block_size=9)(torch.ones(50, 1, 4, 4))
    assert y.shape == (50, 1, 4, 4)
    # b = 4: one seed position, so each 4x4 map is either all kept or all dropped
    per_map = (y == 0).flatten(1).float().mean(1)
    assert set(per_map.tolist()) <= {0.0, 1.0}


def test_ramp_raises_the_drop_probability_linearly_with_the_iteration():
    layer = DropBlock2d(drop_prob=0.2, block_size=3, ramp_iters=10)
    with EventStorage(start_iter=4):
        assert layer.current_drop_prob() == pytest.approx(0.1)  # 0.2 * 5 / 10
    with EventStorage(start_iter=30):
        assert layer.current_drop_prob() == pytest.approx(0.2)
    assert DropBlock2d(drop_prob=0.2, block_size=3).current_drop_prob() == 0.2  # no storage needed


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(drop_prob=1.0, block_size=3),
        dict(drop_prob=0.1, block_size=0),
        dict(drop_prob=0.1, block_size=3, ramp_iters=-1),
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        DropBlock2d(**kwargs)
