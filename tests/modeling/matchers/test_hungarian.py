"""DETR's Hungarian matcher on a hand-made case: 3 queries, 2 targets, K = 2 classes.

Boxes (cxcywh -> xyxy), classes and softmax probabilities (logits are their logs):

    q0 (.75,.75,.5,.5) [.5,.5,1,1]   p = (.7, .2 | .1)     t0 class 1 (.25,.25,.5,.5) [0,0,.5,.5]
    q1 (.25,.5,.5,1)   [0,0,.5,1]    p = (.1, .8 | .1)     t1 class 0 (.75,.75,.5,.5) [.5,.5,1,1]
    q2 (.5,.5,1,1)     [0,0,1,1]     p = (.2, .2 | .6)

    L1:   q0: 1, 0      q1: .75, 1.25     q2: 1.5, 1.5
    GIoU: q0: -.5, 1    q1: .5, -.25      q2: .25, .25
    cost = -p(class) + 5 L1 - 2 GIoU:
          q0: -.2 + 5 + 1 = 5.8      -.7 + 0 - 2 = -2.7
          q1: -.8 + 3.75 - 1 = 1.95  -.1 + 6.25 + .5 = 6.65
          q2: -.2 + 7.5 - .5 = 6.8   -.2 + 7.5 - .5 = 6.8
    best assignment: q0 -> t1, q1 -> t0 (total -0.75); q2 unmatched.
"""
import pytest
import torch

from sephnet.modeling.matchers import HungarianMatcher

PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
BOXES = torch.tensor([[0.75, 0.75, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]], dtype=torch.float64)
TARGET = {
    "labels": torch.tensor([1, 0]),
    "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], dtype=torch.float64),
}


def test_cost_matrix_by_hand():
    cost = HungarianMatcher().cost_matrix(PROBS.log(), BOXES, TARGET["labels"], TARGET["boxes"])
    expected = torch.tensor([[5.8, -2.7], [1.95, 6.65], [6.8, 6.8]], dtype=torch.float64)
    torch.testing.assert_close(cost, expected)


def test_assignment_by_hand_and_per_image():
    matcher = HungarianMatcher()
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4, dtype=torch.float64)}
    logits = torch.stack([PROBS.log(), PROBS.log()])
    boxes = torch.stack([BOXES, BOXES])
    (pred, gt), (pred_empty, gt_empty) = matcher(logits, boxes, [TARGET, empty])
    assert pred.tolist() == [0, 1] and gt.tolist() == [1, 0]
    assert pred.dtype == gt.dtype == torch.int64
    assert len(pred_empty) == len(gt_empty) == 0


def test_class_cost_alone_picks_the_most_probable_queries():
    # classes swapped (t0 class 0, t1 class 1); by -p(class) alone t0 -> q0 (.7), t1 -> q1 (.8)
    target = {"labels": torch.tensor([0, 1]), "boxes": TARGET["boxes"]}
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=0.0, cost_giou=0.0)
    ((pred, gt),) = matcher(PROBS.log()[None], BOXES[None], [target])
    assert pred.tolist() == [0, 1] and gt.tolist() == [0, 1]
    # with the box costs back the boxes win (q0 sits on t1): 5.3, -2.2 / 2.65, 5.95 / 6.8, 6.8
    ((pred, gt),) = HungarianMatcher()(PROBS.log()[None], BOXES[None], [target])
    assert pred.tolist() == [0, 1] and gt.tolist() == [1, 0]


def test_refuses_negative_or_all_zero_weights():
    with pytest.raises(ValueError, match="cost_bbox"):
        HungarianMatcher(cost_bbox=-1.0)
    with pytest.raises(ValueError, match="not all 0"):
        HungarianMatcher(cost_class=0.0, cost_bbox=0.0, cost_giou=0.0)
