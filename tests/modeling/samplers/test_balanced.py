"""BalancedROISampler ("new rcn sample"): exact per-instance and per-bin counts, hand-built."""
from collections import Counter

import pytest
import torch

from sephnet.modeling.samplers.balanced import BalancedROISampler, iou_bins, quota_sample
from sephnet.modeling.samplers.random import RandomROISampler

BG = 3


def _call(sampler, labels, matched_idxs, ious, num_samples, fraction=0.25, generator=None):
    return sampler(
        labels,
        matched_idxs=matched_idxs,
        ious=ious,
        num_samples=num_samples,
        positive_fraction=fraction,
        bg_label=BG,
        generator=generator,
    )


def _positives(sizes):
    """Foreground proposals: sizes[j] of them matched to gt j (class j % BG), IoU 0.7."""
    gt = torch.cat([torch.full((n,), j) for j, n in enumerate(sizes)]).long()
    return gt % BG, gt, torch.full((gt.numel(),), 0.7)


def _negatives(per_bin_ious):
    """Background proposals: (IoU, count) pairs; matched to gt 0."""
    ious = torch.cat([torch.full((n,), v) for v, n in per_bin_ious])
    n = ious.numel()
    return torch.full((n,), BG), torch.zeros(n, dtype=torch.int64), ious


def _cat(*parts):
    return [torch.cat(x) for x in zip(*parts)]


@pytest.mark.parametrize(
    "num_samples,expected",
    [
        # P = 8 positives: quota 8 // 3 = 2 -> 2, 2, 1 (= 5); the 3 missing come from the
        # only group with leftovers, gt 0 -> 5, 2, 1.
        (32, {0: 5, 1: 2, 2: 1}),
        # P = 12: quota 4 -> 4, 2, 1 (= 7); fill 5 from gt 0 -> 9, 2, 1.
        (48, {0: 9, 1: 2, 2: 1}),
        # P = 2 < #gts: quota 0, so both come from the uniform fill (any gt).
        (8, None),
    ],
)
def test_positives_are_balanced_per_gt_instance(num_samples, expected):
    labels, gt, ious = _cat(_positives([10, 2, 1]), _negatives([(0.0, 200)]))
    sampler = BalancedROISampler(balanced_pos=True, balanced_neg=False)
    for seed in range(4):
        fg, bg = _call(
            sampler, labels, gt, ious, num_samples, generator=torch.Generator().manual_seed(seed)
        )
        assert fg.numel() == num_samples // 4 and bg.numel() == num_samples - num_samples // 4
        assert len(set(fg.tolist())) == fg.numel()
        if expected is not None:
            assert dict(Counter(gt[fg].tolist())) == expected


def test_uniform_positives_follow_group_sizes_not_instances():
    """Without balancing, the big instance dominates: over many draws gt 0 gets ~ 10/13."""
    labels, gt, ious = _cat(_positives([10, 2, 1]), _negatives([(0.0, 200)]))
    counts = {True: Counter(), False: Counter()}
    for balanced in (True, False):
        sampler = BalancedROISampler(balanced_pos=balanced, balanced_neg=False)
        for seed in range(60):
            fg, _ = _call(
                sampler, labels, gt, ious, 16, generator=torch.Generator().manual_seed(seed)
            )
            counts[balanced].update(gt[fg].tolist())
    # 4 positives per draw. Balanced: quota 1 per gt, then 1 uniform from the 10 leftovers
    # (9 of gt 0, 1 of gt 1): gt 2 is picked every time (60), gt 0 at least once each time.
    assert counts[True][2] == 60
    assert counts[True][0] >= 60
    # Uniform: gt 2 is picked with probability 4/13 per draw (about 18 of 60; std ~3.6).
    assert 6 < counts[False][2] < 36


def test_iou_bins_hand_values():
    ious = torch.tensor([-0.2, 0.0, 0.06, 0.07, 0.2, 0.3, 0.4, 0.49, 0.5, 0.9])
    # width (0.5 + 0.2) / 8 = 0.0875; index = floor((iou + 0.2) / 0.0875), clipped to 7.
    expected = [0, 2, 2, 3, 4, 5, 6, 7, 7, 7]
    assert iou_bins(ious, 8, -0.2, 0.5).tolist() == expected
    assert iou_bins(ious, 1, -0.2, 0.5).tolist() == [0] * 10


def test_negatives_are_balanced_over_iou_bins():
    # Bin (of 8 over [-0.2, 0.5]) -> count: 2 -> 50, 3 -> 1, 4 -> 2, 5 -> 2, 6 -> 0, 7 -> 2.
    negatives = _negatives([(0.01, 50), (0.1, 1), (0.2, 2), (0.3, 2), (0.45, 2)])
    labels, gt, ious = _cat(_positives([30]), negatives)
    sampler = BalancedROISampler(balanced_pos=False, balanced_neg=True)
    for seed in range(4):
        # N = 16 negatives: quota 16 // 8 = 2 per bin -> 2 + 1 + 2 + 2 + 2 = 9; the 7 missing
        # come from the leftovers, all in bin 2.
        fg, bg = _call(
            sampler,
            labels,
            gt,
            ious,
            20,
            fraction=0.2,
            generator=torch.Generator().manual_seed(seed),
        )
        assert fg.numel() == 4 and bg.numel() == 16
        bins = Counter(iou_bins(ious[bg], 8, -0.2, 0.5).tolist())
        assert dict(bins) == {2: 9, 3: 1, 4: 2, 5: 2, 7: 2}
        assert len(set(bg.tolist())) == 16


def test_balanced_negatives_overrepresent_hard_negatives_compared_to_uniform():
    negatives = _negatives([(0.0, 400), (0.45, 40)])  # bins 2 and 7
    labels, gt, ious = _cat(_positives([5]), negatives)
    hard = {}
    for balanced in (True, False):
        sampler = BalancedROISampler(balanced_pos=False, balanced_neg=balanced)
        fg, bg = _call(sampler, labels, gt, ious, 64, generator=torch.Generator().manual_seed(0))
        hard[balanced] = int((ious[bg] > 0.4).sum())
    # 59 negatives: balanced takes 59 // 8 = 7 from each non-empty bin first, then fills
    # uniformly from 393 + 33 leftovers; uniform expects 59 * 40 / 440 ~ 5.4 hard ones.
    assert hard[True] >= 7
    assert hard[True] > hard[False]


def test_balanced_never_samples_ignored_entries():
    labels = torch.tensor([-1] * 50 + [0, 1] + [BG] * 3 + [-1] * 50)
    gt = torch.randint(0, 2, (labels.numel(),))
    ious = torch.rand(labels.numel()) * 0.5
    for pos, neg in [(True, True), (True, False), (False, True), (False, False)]:
        sampler = BalancedROISampler(balanced_pos=pos, balanced_neg=neg)
        for seed in range(5):
            fg, bg = _call(
                sampler, labels, gt, ious, 64, generator=torch.Generator().manual_seed(seed)
            )
            assert sorted(fg.tolist()) == [50, 51] and sorted(bg.tolist()) == [52, 53, 54]


def test_same_seed_same_picks():
    labels, gt, ious = _cat(
        _positives([7, 5, 3, 1]), _negatives([(0.01, 100), (0.2, 30), (0.4, 30)])
    )
    sampler = BalancedROISampler()
    a = _call(sampler, labels, gt, ious, 32, generator=torch.Generator().manual_seed(11))
    b = _call(sampler, labels, gt, ious, 32, generator=torch.Generator().manual_seed(11))
    c = _call(sampler, labels, gt, ious, 32, generator=torch.Generator().manual_seed(12))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    torch.manual_seed(5)
    d = _call(sampler, labels, gt, ious, 32)
    torch.manual_seed(5)
    e = _call(sampler, labels, gt, ious, 32)
    assert all(torch.equal(x, y) for x, y in zip(d, e))


def test_both_switches_off_equals_random_sampler():
    """sephv16 ("no balance") is the uniform sampler, pick for pick."""
    labels, gt, ious = _cat(_positives([7, 5, 3, 1]), _negatives([(0.01, 100), (0.2, 30)]))
    off = BalancedROISampler(balanced_pos=False, balanced_neg=False)
    for seed in range(3):
        a = _call(off, labels, gt, ious, 32, generator=torch.Generator().manual_seed(seed))
        b = _call(
            RandomROISampler(), labels, gt, ious, 32, generator=torch.Generator().manual_seed(seed)
        )
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_empty_inputs_give_empty_int64_outputs():
    empty = torch.zeros(0, dtype=torch.int64)
    fg, bg = _call(BalancedROISampler(), empty, empty, torch.zeros(0), 16)
    assert fg.shape == bg.shape == (0,) and fg.dtype == bg.dtype == torch.int64


def test_quota_sample_caps_then_fills_without_repeats():
    groups = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        pos = quota_sample(groups, 5, 2, g)
        assert len(set(pos.tolist())) == 5
        counts = Counter(groups[pos].tolist())
        # step 1: 2 + 2 + 1 = 5 = k, so nothing is filled.
        assert dict(counts) == {0: 2, 1: 2, 2: 1}
        # quota 3: the capped picks (3 + 3 + 1 = 7) exceed k = 5; k of them are kept.
        over = quota_sample(groups, 5, 3, g)
        assert over.numel() == 5 and len(set(over.tolist())) == 5
    assert quota_sample(groups, 0, 2).numel() == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_neg_bins": 0}, "num_neg_bins=0"),
        ({"num_neg_bins": 2.0}, "num_neg_bins=2.0"),
        ({"neg_low_iou": 0.5, "neg_high_iou": 0.5}, "neg_low_iou=0.5"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BalancedROISampler(**kwargs)
