import pytest
import torch

from sephnet.d2.modeling.matcher import Matcher


def _reference_match(quality, thresholds, labels, allow_low_quality):
    """Slow, loop-based statement of the matching rule."""
    m, n = quality.shape
    idxs, out = [], []
    bounds = [-float("inf")] + list(thresholds) + [float("inf")]
    for j in range(n):
        col = [float(quality[i, j]) for i in range(m)]
        best = max(range(m), key=lambda i: (col[i], -i))  # first index among ties
        idxs.append(best)
        for k in range(len(labels)):
            if bounds[k] <= col[best] < bounds[k + 1]:
                out.append(labels[k])
    if allow_low_quality:
        for i in range(m):
            row_max = max(float(quality[i, j]) for j in range(n))
            for j in range(n):
                if float(quality[i, j]) == row_max:
                    out[j] = 1
    return idxs, out


def test_threshold_bands_and_dtypes():
    matcher = Matcher([0.3, 0.7], [0, -1, 1])
    quality = torch.tensor(
        [
            [0.10, 0.50, 0.80, 0.20, 0.30, 0.70],
            [0.20, 0.60, 0.10, 0.25, 0.00, 0.69],
        ]
    )
    idxs, labels = matcher(quality)
    assert idxs.dtype == torch.int64 and labels.dtype == torch.int8
    assert idxs.tolist() == [1, 1, 0, 1, 0, 0]
    # 0.2 -> 0; 0.6 -> ignore; 0.8 -> 1; 0.25 -> 0; 0.3 (boundary, lower-inclusive) -> -1; 0.7 -> 1
    assert labels.tolist() == [0, -1, 1, 0, -1, 1]


def test_low_quality_matches_include_ties_and_keep_argmax_index():
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    quality = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.05],  # gt0: best 0.9 at pred 0
            [0.0, 0.2, 0.2, 0.0, 0.10],  # gt1: best 0.2, tied at preds 1 and 2
            [0.0, 0.0, 0.0, 0.0, 0.15],  # gt2: best 0.15 at pred 4
        ]
    )
    idxs, labels = matcher(quality)
    # pred 3 has an all-zero column: matched to gt 0 (first), background.
    assert idxs.tolist() == [0, 1, 1, 0, 2]
    assert labels.tolist() == [1, 1, 1, 0, 1]
    no_lq_labels = Matcher([0.3, 0.7], [0, -1, 1])(quality)[1]
    assert no_lq_labels.tolist() == [1, 0, 0, 0, 0]


def test_low_quality_match_keeps_better_gt_index():
    # pred 1 is the best for gt0 (0.4) but overlaps gt1 more (0.5): labelled 1, index stays 1.
    matcher = Matcher([0.7], [0, 1], allow_low_quality_matches=True)
    quality = torch.tensor([[0.1, 0.4], [0.8, 0.5]])
    idxs, labels = matcher(quality)
    assert idxs.tolist() == [1, 1]
    assert labels.tolist() == [1, 1]


def test_gt_without_any_overlap_makes_zero_quality_predictions_positive():
    # detectron2 quirk kept on purpose: a gt row of zeros ties with every zero entry.
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=True)
    quality = torch.tensor([[0.6, 0.0, 0.0], [0.0, 0.0, 0.0]])
    _, labels = matcher(quality)
    assert labels.tolist() == [1, 1, 1]


@pytest.mark.parametrize("labels", [[0, 1], [-1, 1]])
def test_empty_ground_truth_gives_first_label(labels):
    matcher = Matcher([0.5], labels)
    idxs, out = matcher(torch.zeros((0, 4)))
    assert idxs.tolist() == [0, 0, 0, 0] and idxs.dtype == torch.int64
    assert out.tolist() == [labels[0]] * 4 and out.dtype == torch.int8


def test_no_predictions_gives_empty_outputs():
    idxs, labels = Matcher([0.5], [0, 1], True)(torch.zeros((3, 0)))
    assert idxs.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize("allow_low_quality", [False, True])
def test_matches_loop_reference_on_random_matrices(allow_low_quality):
    thresholds, labels = [0.4, 0.5], [0, -1, 1]
    matcher = Matcher(thresholds, labels, allow_low_quality)
    for _ in range(5):
        quality = torch.rand(4, 30)
        quality[quality < 0.3] = 0.0
        idxs, out = matcher(quality)
        ref_idxs, ref_labels = _reference_match(quality, thresholds, labels, allow_low_quality)
        assert idxs.tolist() == ref_idxs
        assert out.tolist() == ref_labels


def test_thresholds_are_not_mutated():
    thresholds = [0.3, 0.7]
    Matcher(thresholds, [0, -1, 1])
    assert thresholds == [0.3, 0.7]


@pytest.mark.parametrize(
    "thresholds, labels",
    [
        ([0.0], [0, 1]),  # first threshold must be > 0
        ([0.7, 0.3], [0, -1, 1]),  # not sorted
        ([0.5], [0, 2]),  # label outside {-1, 0, 1}
        ([0.3, 0.7], [0, 1]),  # wrong number of labels
    ],
)
def test_invalid_configuration_raises(thresholds, labels):
    with pytest.raises(ValueError):
        Matcher(thresholds, labels)


def test_invalid_quality_matrix_raises():
    matcher = Matcher([0.5], [0, 1])
    with pytest.raises(ValueError):
        matcher(torch.tensor([[0.5, -0.1]]))
    with pytest.raises(ValueError):
        matcher(torch.zeros(3))
