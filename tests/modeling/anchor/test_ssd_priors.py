"""SSD priors: counts, centres, sizes and order computed by hand."""
import math

import pytest
import torch

from sephnet.modeling.anchor.ssd_priors import SSDPriorGenerator, num_priors_per_location

SQRT2 = math.sqrt(2.0)


def _box(cx, cy, w, h):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_priors_of_a_2x2_map_by_hand():
    generator = SSDPriorGenerator(min_sizes=[4], max_sizes=[9], aspect_ratios=[[2]], strides=[10])
    (priors,) = generator([(2, 2)])
    assert priors.shape == (2 * 2 * 4, 4)
    # row-major locations: (x, y) centres (5, 5), (15, 5), (5, 15), (15, 15)
    sizes = [(4, 4), (6, 6), (4 * SQRT2, 4 / SQRT2), (4 / SQRT2, 4 * SQRT2)]  # 6 = sqrt(4 * 9)
    expected = [_box(cx, cy, w, h) for cy in (5, 15) for cx in (5, 15) for w, h in sizes]
    torch.testing.assert_close(priors, torch.tensor(expected), rtol=0, atol=1e-5)


def test_two_levels_are_concatenated_in_order_with_their_own_ratios():
    generator = SSDPriorGenerator(
        min_sizes=[4, 12], max_sizes=[9, 27], aspect_ratios=[[2], [2, 3]], strides=[10, 20]
    )
    fine, coarse = generator([(2, 2), (1, 1)])
    assert generator.num_priors_per_location == [4, 6]
    assert coarse.shape == (6, 4)
    r3 = math.sqrt(3.0)
    sizes = [(12, 12), (18, 18), (12 * SQRT2, 12 / SQRT2), (12 / SQRT2, 12 * SQRT2), (12 * r3, 12 / r3), (12 / r3, 12 * r3)]
    torch.testing.assert_close(coarse, torch.tensor([_box(10, 10, w, h) for w, h in sizes]), rtol=0, atol=1e-5)


def test_ssd300_has_8732_priors():
    generator = SSDPriorGenerator(
        min_sizes=[21, 45, 99, 153, 207, 261],
        max_sizes=[45, 99, 153, 207, 261, 315],
        aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        strides=[8, 16, 32, 64, 100, 300],
    )
    priors = generator([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)])
    assert [len(p) for p in priors] == [5776, 2166, 600, 150, 36, 4]
    # the last level: one location at the image centre, the 315 / 261 boxes cross the border
    assert priors[-1][0].tolist() == pytest.approx([19.5, 19.5, 280.5, 280.5])
    # the last centre of conv4_3 sits at (37 + 0.5) * 8 = 300
    last = priors[0][-4:]
    assert ((last[:, 0] + last[:, 2]) / 2).tolist() == pytest.approx([300.0] * 4)


def test_clipping_keeps_priors_inside_the_input():
    args = dict(min_sizes=[30], max_sizes=[30], aspect_ratios=[[]], strides=[20])
    (unclipped,) = SSDPriorGenerator(**args)([(1, 1)])
    (clipped,) = SSDPriorGenerator(**args, clip_size=20)([(1, 1)])
    assert unclipped[0].tolist() == [-5.0, -5.0, 25.0, 25.0]
    assert clipped[0].tolist() == [0.0, 0.0, 20.0, 20.0]


def test_offset_moves_the_centres():
    (priors,) = SSDPriorGenerator(min_sizes=[2], max_sizes=[2], aspect_ratios=[[]], strides=[8], offset=0.0)([(1, 2)])
    assert priors[:, 0].tolist() == [-1.0, -1.0, 7.0, 7.0]


def test_counts_per_location():
    assert num_priors_per_location([]) == 2
    assert num_priors_per_location([2]) == 4
    assert num_priors_per_location([2, 3]) == 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_sizes=[4, 8], max_sizes=[9], aspect_ratios=[[2]], strides=[8]), "one min size"),
        (dict(min_sizes=[10], max_sizes=[9], aspect_ratios=[[2]], strides=[8]), "min <= max"),
        (dict(min_sizes=[4], max_sizes=[9], aspect_ratios=[[1]], strides=[8]), "!= 1"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SSDPriorGenerator(**kwargs)


def test_wrong_number_of_feature_maps_is_refused():
    generator = SSDPriorGenerator(min_sizes=[4], max_sizes=[9], aspect_ratios=[[2]], strides=[8])
    with pytest.raises(ValueError, match="1 levels; got 2"):
        generator([(2, 2), (1, 1)])
