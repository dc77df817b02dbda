"""find_top_rpn_proposals / add_ground_truth_to_proposals on hand-crafted two-level inputs."""
import math

import pytest
import torch

from sephnet.d2.modeling.proposal_generator.proposal_utils import (
    add_ground_truth_to_proposals,
    find_top_rpn_proposals,
)
from sephnet.d2.structures import Boxes, Instances

# Level 0 (4 candidates) and level 1 (3 candidates) of one image of size 20 x 20.
LEVEL0_BOXES = [
    [0.0, 0.0, 10.0, 10.0],  # a: score 5, best of level 0
    [0.0, 0.0, 10.0, 9.0],  # b: score 4, IoU(a, b) = 0.9 -> suppressed by a
    [12.0, 12.0, 12.5, 18.0],  # c: score 3, width 0.5 <= min size -> removed
    [5.0, 5.0, 8.0, 8.0],  # d: score 1, 4th of its level -> cut by pre_nms_topk=3
]
LEVEL0_SCORES = [5.0, 4.0, 3.0, 1.0]
LEVEL1_BOXES = [
    [0.0, 0.0, 10.0, 10.0],  # e: score 4.5, same box as a but another level -> survives NMS
    [-5.0, -5.0, 30.0, 25.0],  # f: score 2, clipped to the image -> [0, 0, 20, 20]
    [15.0, 15.0, 19.0, 19.0],  # g: score 0.5, survives but is cut by post_nms_topk=3
]
LEVEL1_SCORES = [4.5, 2.0, 0.5]


def _inputs(num_images: int = 1):
    # Candidates are listed out of score order to exercise the per-level sort.
    perm0, perm1 = [2, 0, 3, 1], [1, 2, 0]
    boxes = [
        torch.tensor([LEVEL0_BOXES[i] for i in perm0]).expand(num_images, -1, -1).clone(),
        torch.tensor([LEVEL1_BOXES[i] for i in perm1]).expand(num_images, -1, -1).clone(),
    ]
    scores = [
        torch.tensor([LEVEL0_SCORES[i] for i in perm0]).expand(num_images, -1).clone(),
        torch.tensor([LEVEL1_SCORES[i] for i in perm1]).expand(num_images, -1).clone(),
    ]
    return boxes, scores


def _run(boxes, scores, image_sizes, post_nms_topk=3, training=False, min_box_size=1.0):
    return find_top_rpn_proposals(
        boxes,
        scores,
        image_sizes,
        nms_thresh=0.5,
        pre_nms_topk=3,
        post_nms_topk=post_nms_topk,
        min_box_size=min_box_size,
        training=training,
    )


def test_top_k_per_level_then_nms_by_level_min_size_and_post_topk():
    boxes, scores = _inputs()
    (result,) = _run(boxes, scores, [(20, 20)])
    assert result.image_size == (20, 20)
    assert isinstance(result.proposal_boxes, Boxes)
    expected = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 20, 20]], dtype=torch.float)
    assert torch.equal(result.proposal_boxes.tensor, expected)
    assert torch.equal(result.objectness_logits, torch.tensor([5.0, 4.5, 2.0]))


def test_larger_post_topk_keeps_all_survivors_sorted():
    boxes, scores = _inputs()
    (result,) = _run(boxes, scores, [(20, 20)], post_nms_topk=100)
    assert torch.equal(result.objectness_logits, torch.tensor([5.0, 4.5, 2.0, 0.5]))
    assert torch.equal(result.proposal_boxes.tensor[3], torch.tensor([15.0, 15.0, 19.0, 19.0]))


def test_min_size_zero_keeps_thin_box_and_side_equal_to_min_size_is_removed():
    boxes, scores = _inputs()
    (result,) = _run(boxes, scores, [(20, 20)], post_nms_topk=100, min_box_size=0.0)
    assert torch.equal(result.objectness_logits, torch.tensor([5.0, 4.5, 3.0, 2.0, 0.5]))
    # g is 4 x 4: a threshold of exactly 4 removes it (a side must be strictly larger).
    (result,) = _run(boxes, scores, [(20, 20)], post_nms_topk=100, min_box_size=4.0)
    assert torch.equal(result.objectness_logits, torch.tensor([5.0, 4.5, 2.0]))


def test_each_image_is_clipped_to_its_own_size():
    boxes, scores = _inputs(num_images=2)
    first, second = _run(boxes, scores, [(20, 20), (8, 30)], post_nms_topk=100)
    assert first.image_size == (20, 20) and second.image_size == (8, 30)
    assert torch.equal(first.objectness_logits, torch.tensor([5.0, 4.5, 2.0, 0.5]))
    # In an 8-pixel-high image, g ([15, 15, 19, 19]) collapses to zero height; a and b become
    # [0,0,10,8] and [0,0,10,8] (identical, so b is still suppressed); f becomes [0,0,30,8].
    assert torch.equal(second.objectness_logits, torch.tensor([5.0, 4.5, 2.0]))
    assert torch.equal(
        second.proposal_boxes.tensor,
        torch.tensor([[0, 0, 10, 8], [0, 0, 10, 8], [0, 0, 30, 8]], dtype=torch.float),
    )


def test_level_with_fewer_candidates_than_pre_nms_topk():
    boxes = [torch.tensor([[[0.0, 0.0, 5.0, 5.0]]]), torch.tensor([[[10.0, 10.0, 15.0, 15.0]]])]
    scores = [torch.tensor([[1.0]]), torch.tensor([[2.0]])]
    (result,) = _run(boxes, scores, [(20, 20)])
    assert torch.equal(result.objectness_logits, torch.tensor([2.0, 1.0]))


def test_non_finite_candidates_raise_in_training_and_are_dropped_at_test_time():
    boxes, scores = _inputs()
    boxes[0][0, 1, 0] = float("nan")  # a (position 1 of the permuted level 0)
    with pytest.raises(FloatingPointError, match="diverged"):
        _run(boxes, scores, [(20, 20)], training=True)
    (result,) = _run(boxes, scores, [(20, 20)])
    # Without a, b ([0,0,10,9], score 4) is no longer suppressed.
    assert torch.equal(result.objectness_logits, torch.tensor([4.5, 4.0, 2.0]))

    boxes, scores = _inputs()
    scores[1][0, 2] = float("inf")  # e
    (result,) = _run(boxes, scores, [(20, 20)])
    assert torch.equal(result.objectness_logits, torch.tensor([5.0, 2.0, 0.5]))


def test_everything_removed_gives_empty_instances():
    boxes = [torch.tensor([[[0.0, 0.0, 0.5, 0.5], [3.0, 3.0, 3.0, 9.0]]])]
    scores = [torch.tensor([[1.0, 2.0]])]
    (result,) = _run(boxes, scores, [(20, 20)])
    assert len(result) == 0
    assert result.proposal_boxes.tensor.shape == (0, 4)
    assert result.objectness_logits.shape == (0,)


def test_add_ground_truth_appends_gt_boxes_with_near_certain_logit():
    proposals = Instances((20, 20))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
    proposals.objectness_logits = torch.tensor([0.3])
    gt = Instances((20, 20))
    gt.gt_boxes = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    gt.gt_classes = torch.tensor([1, 2])

    (merged,) = add_ground_truth_to_proposals([gt], [proposals])
    assert len(merged) == 3
    assert torch.equal(merged.proposal_boxes.tensor[1:], gt.gt_boxes.tensor)
    expected_logit = math.log((1.0 - 1e-10) / 1e-10)
    assert torch.allclose(merged.objectness_logits[1:], torch.full((2,), expected_logit))
    assert merged.objectness_logits[0].item() == pytest.approx(0.3)
    # Fields come from the first element only: gt_classes is not carried over.
    assert not merged.has("gt_classes")

    (from_boxes,) = add_ground_truth_to_proposals([gt.gt_boxes], [proposals])
    assert torch.equal(from_boxes.proposal_boxes.tensor, merged.proposal_boxes.tensor)


def test_add_ground_truth_rejects_mismatched_lengths():
    proposals = Instances((4, 4))
    proposals.proposal_boxes = Boxes(torch.zeros(0, 4))
    proposals.objectness_logits = torch.zeros(0)
    with pytest.raises(ValueError, match="same length"):
        add_ground_truth_to_proposals([], [proposals])
    assert add_ground_truth_to_proposals([], []) == []
