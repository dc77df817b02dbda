"""Hard negative mining: counts and picks on hand-made loss vectors."""
import pytest
import torch

from sephnet.modeling.losses.hard_negative_mining import hard_negative_mask

LOSS = torch.tensor([0.5, 2.0, 0.1, 3.0, 2.0, 0.7, 0.0, 1.0])


def _mask(indices, size=8):
    mask = torch.zeros(size, dtype=torch.bool)
    mask[list(indices)] = True
    return mask


@pytest.mark.parametrize(
    "positives, ratio, expected",
    [
        ([3], 3, [1, 4, 7]),  # 3 negatives; prior 3 (the largest loss) is positive, never picked
        ([3, 6], 1, [1, 4]),  # 2 negatives: the two 2.0s
        ([3, 6], 1.5, [1, 4, 7]),  # floor(1.5 * 2) = 3
        ([3, 6], 3, [0, 1, 2, 4, 5, 7]),  # 6 wanted, exactly 6 negatives exist
        ([3, 6], 10, [0, 1, 2, 4, 5, 7]),  # capped at the number of negatives
        ([], 3, []),  # no positive: no negative
    ],
)
def test_picks_the_largest_losses_among_negatives(positives, ratio, expected):
    chosen = hard_negative_mask(LOSS, _mask(positives), ratio)
    assert torch.nonzero(chosen).flatten().tolist() == expected
    assert not (chosen & _mask(positives)).any()


def test_ties_go_to_the_lower_index():
    chosen = hard_negative_mask(torch.ones(6), _mask([0], 6), 2)
    assert torch.nonzero(chosen).flatten().tolist() == [1, 2]


def test_every_prior_positive_leaves_no_negative():
    assert not hard_negative_mask(LOSS, torch.ones(8, dtype=torch.bool), 3).any()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="hard_negative_mask"):
        hard_negative_mask(LOSS, torch.zeros(7, dtype=torch.bool), 3)
