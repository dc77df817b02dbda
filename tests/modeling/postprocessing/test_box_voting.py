"""Box voting against a hand-computed fusion."""
import pytest
import torch

from sephnet.modeling.postprocessing import box_voting


def test_kept_box_becomes_score_weighted_mean_of_its_voters():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # the kept box, score 0.9
        [0.0, 0.0, 10.0, 8.0],    # IoU 0.8: votes with 0.6
        [0.0, 0.0, 10.0, 4.0],    # IoU 0.4 < 0.5: does not vote
        [0.0, 0.0, 10.0, 8.0],    # other class: does not vote
        [20.0, 20.0, 30.0, 30.0],  # disjoint
    ], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.6, 0.8, 0.95, 0.7], dtype=torch.float64)
    classes = torch.tensor([0, 0, 0, 1, 0])
    voted = box_voting(boxes[:1], classes[:1], boxes, scores, classes, 0.5)
    # (0.9 * [0,0,10,10] + 0.6 * [0,0,10,8]) / 1.5
    assert voted[0].tolist() == pytest.approx([0.0, 0.0, 10.0, 9.2])


def test_threshold_is_inclusive_and_lone_boxes_stay():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]], dtype=torch.float64)
    scores = torch.tensor([0.5, 0.5], dtype=torch.float64)
    classes = torch.tensor([2, 2])
    # IoU exactly 0.5 votes: mean of the two boxes
    assert box_voting(boxes[:1], classes[:1], boxes, scores, classes, 0.5).tolist() == [
        [0.0, 0.0, 10.0, 7.5]
    ]
    # nothing overlaps enough: the kept box is its only voter
    assert box_voting(boxes[:1], classes[:1], boxes, scores, classes, 0.9).tolist() == [
        [0.0, 0.0, 10.0, 10.0]
    ]
    assert box_voting(boxes[:0], classes[:0], boxes, scores, classes, 0.5).shape == (0, 4)
