import pytest
import torch

from sephnet.d2.modeling.sampling import subsample_labels


def _labels(num_fg: int, num_bg: int, num_ignore: int = 0, fg_value: int = 1, bg_label: int = 0):
    labels = torch.cat(
        [
            torch.full((num_fg,), fg_value),
            torch.full((num_bg,), bg_label),
            torch.full((num_ignore,), -1),
        ]
    )
    return labels[torch.randperm(len(labels))]


@pytest.mark.parametrize(
    "num_fg, num_bg, expected_pos, expected_neg",
    [
        (10, 100, 4, 12),  # enough of both: 16 * 0.25 = 4 positives
        (2, 100, 2, 14),  # too few positives: negatives fill the slots
        (2, 3, 2, 3),  # too few of both: everything labelled is taken
        (10, 5, 4, 5),  # too few negatives: positives stay capped at the fraction
        (0, 0, 0, 0),
    ],
)
def test_counts(num_fg, num_bg, expected_pos, expected_neg):
    labels = _labels(num_fg, num_bg, num_ignore=7)
    pos, neg = subsample_labels(labels, num_samples=16, positive_fraction=0.25, bg_label=0)
    assert pos.numel() == expected_pos and neg.numel() == expected_neg
    assert pos.dtype == torch.int64 and neg.dtype == torch.int64
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == pos.numel() and len(set(neg.tolist())) == neg.numel()


def test_ignored_never_sampled_and_non_zero_background_label():
    # Class labels 0..4 are foreground, 5 is background (the ROI-heads convention).
    labels = torch.tensor([0, 3, -1, 5, 5, -1, 4, 5, 2, -1])
    pos, neg = subsample_labels(labels, num_samples=100, positive_fraction=0.5, bg_label=5)
    assert sorted(pos.tolist()) == [0, 1, 6, 8]
    assert sorted(neg.tolist()) == [3, 4, 7]


def test_fraction_is_truncated_not_rounded():
    labels = _labels(50, 50)
    pos, neg = subsample_labels(labels, num_samples=10, positive_fraction=0.39, bg_label=0)
    assert pos.numel() == 3 and neg.numel() == 7


def test_draw_order_reproduces_randperm_positive_then_negative():
    labels = torch.tensor([0, 1, 1, -1, 0, 0, 2, 0, 1, 0, 0, 1])
    positives = torch.tensor([1, 2, 6, 8, 11])
    negatives = torch.tensor([0, 4, 5, 7, 9, 10])
    torch.manual_seed(123)
    expected_pos = positives[torch.randperm(5)[:2]]
    expected_neg = negatives[torch.randperm(6)[:4]]
    torch.manual_seed(123)
    pos, neg = subsample_labels(labels, num_samples=6, positive_fraction=0.4, bg_label=0)
    assert pos.tolist() == expected_pos.tolist()
    assert neg.tolist() == expected_neg.tolist()
