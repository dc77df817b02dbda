"""SSD matching on hand-made IoU matrices: threshold, forced best prior, overrides."""
import torch

from sephnet.modeling.matchers.ssd_matcher import match_priors


def test_threshold_and_forced_best_prior():
    iou = torch.tensor([
        [0.60, 0.30, 0.20, 0.55, 0.00],
        [0.10, 0.40, 0.45, 0.52, 0.00],
    ])
    matched, labels = match_priors(iou, 0.5)
    # prior 3 is gt 1's best prior: forced to gt 1 although gt 0 overlaps it more (0.55)
    assert matched.tolist() == [0, 1, 1, 1, 0]
    assert labels.tolist() == [1, 0, 0, 1, 0]
    assert matched.dtype == torch.int64 and labels.dtype == torch.int8


def test_a_ground_truth_below_the_threshold_still_gets_its_best_prior():
    iou = torch.tensor([[0.1, 0.3, 0.2]])
    matched, labels = match_priors(iou, 0.5)
    assert labels.tolist() == [0, 1, 0]
    assert matched.tolist() == [0, 0, 0]


def test_later_ground_truth_keeps_a_shared_best_prior():
    iou = torch.tensor([[0.2, 0.7], [0.1, 0.6]])
    matched, labels = match_priors(iou, 0.5)
    assert matched.tolist() == [0, 1]
    assert labels.tolist() == [0, 1]


def test_no_ground_truth_gives_all_negatives():
    matched, labels = match_priors(torch.zeros(0, 4), 0.5)
    assert matched.tolist() == [0] * 4 and labels.tolist() == [0] * 4
