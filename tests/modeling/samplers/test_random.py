"""RandomROISampler: detectron2's subsample_labels, pick for pick; the shared count rule."""
import pytest
import torch

from sephnet.backend import subsample_labels
from sephnet.modeling.samplers.base import random_subset, sample_counts
from sephnet.modeling.samplers.random import RandomROISampler

BG = 5


def _labels(num_fg, num_bg, num_ignore, seed=0):
    """A shuffled label vector with the given numbers of foreground, background and -1."""
    g = torch.Generator().manual_seed(seed)
    fg = torch.randint(0, BG, (num_fg,), generator=g)
    labels = torch.cat([fg, torch.full((num_bg,), BG), torch.full((num_ignore,), -1)])
    return labels[torch.randperm(labels.numel(), generator=g)]


def _call(sampler, labels, num_samples=16, fraction=0.25, generator=None):
    n = labels.numel()
    return sampler(
        labels,
        matched_idxs=torch.zeros(n, dtype=torch.int64),
        ious=torch.zeros(n),
        num_samples=num_samples,
        positive_fraction=fraction,
        bg_label=BG,
        generator=generator,
    )


@pytest.mark.parametrize(
    "num_fg,num_bg,num_ignore,num_samples,fraction",
    [
        (30, 100, 10, 16, 0.25),
        (2, 100, 5, 16, 0.25),
        (3, 4, 20, 16, 0.5),
        (0, 0, 7, 8, 0.25),
        (50, 0, 0, 8, 0.25),
    ],
)
def test_random_sampler_equals_subsample_labels_under_the_same_seed(
    num_fg, num_bg, num_ignore, num_samples, fraction
):
    labels = _labels(num_fg, num_bg, num_ignore)
    sampler = RandomROISampler()
    torch.manual_seed(7)
    expected = subsample_labels(labels, num_samples, fraction, BG)
    # Global RNG: the adapter delegates to subsample_labels.
    torch.manual_seed(7)
    got = _call(sampler, labels, num_samples, fraction)
    # A generator seeded like the global RNG draws the same two permutations.
    got_generator = _call(sampler, labels, num_samples, fraction, torch.Generator().manual_seed(7))
    for a, b, c in zip(expected, got, got_generator):
        assert a.dtype == b.dtype == c.dtype == torch.int64
        assert torch.equal(a, b) and torch.equal(a, c)


def test_random_sampler_never_samples_ignored_and_splits_fg_bg():
    labels = _labels(10, 20, 200)
    for seed in range(5):
        fg, bg = _call(RandomROISampler(), labels, 64, 0.5, torch.Generator().manual_seed(seed))
        assert fg.numel() == 10 and bg.numel() == 20  # all available, ignored never
        assert ((labels[fg] >= 0) & (labels[fg] < BG)).all()
        assert (labels[bg] == BG).all()
        assert len(set(torch.cat([fg, bg]).tolist())) == 30


@pytest.mark.parametrize(
    "available,request_,expected",
    [
        ((5, 100), (16, 0.25), (4, 12)),  # both plentiful
        ((2, 100), (16, 0.25), (2, 14)),  # few positives: negatives fill up
        ((2, 3), (16, 0.25), (2, 3)),  # too few of both: fewer than 16, no repeats
        ((0, 0), (16, 0.25), (0, 0)),
        ((40, 1), (10, 0.33), (3, 1)),  # int(10 * 0.33) = 3
    ],
)
def test_sample_counts_follow_detectron2(available, request_, expected):
    assert sample_counts(*available, *request_) == expected


def test_random_subset_draws_distinct_entries_deterministically():
    indices = torch.arange(100, 120)
    a = random_subset(indices, 7, torch.Generator().manual_seed(3))
    b = random_subset(indices, 7, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(set(a.tolist())) == 7
    assert set(a.tolist()) <= set(indices.tolist())
    assert random_subset(indices[:0], 0).shape == (0,)


def test_random_sampler_same_seed_same_picks_different_seed_different():
    labels = _labels(40, 200, 0)
    picks = [
        torch.cat(_call(RandomROISampler(), labels, 32, 0.25, torch.Generator().manual_seed(s)))
        for s in (1, 1, 2)
    ]
    assert torch.equal(picks[0], picks[1])
    assert not torch.equal(picks[0], picks[2])
