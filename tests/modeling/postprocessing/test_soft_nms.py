"""Soft-NMS against hand-computed decays."""
import math

import pytest
import torch

from sephnet.modeling.postprocessing import batched_soft_nms, soft_nms

A = [0.0, 0.0, 10.0, 10.0]
B = [0.0, 0.0, 10.0, 5.0]  # IoU(A, B) = 50 / 100 = 0.5
C = [20.0, 20.0, 30.0, 30.0]  # disjoint from A and B


def run(boxes, scores, **kw):
    args = dict(method="linear", iou_threshold=0.3, sigma=0.5, score_threshold=0.001)
    args.update(kw)
    keep, s = soft_nms(torch.tensor(boxes, dtype=torch.float64),
                       torch.tensor(scores, dtype=torch.float64), **args)
    return keep.tolist(), s.tolist()


def test_linear_decays_overlaps_above_the_threshold():
    keep, scores = run([A, B, C], [0.9, 0.85, 0.8])
    # A kept; B: IoU 0.5 > 0.3 -> 0.85 * (1 - 0.5); C untouched, so it comes before B
    assert keep == [0, 2, 1]
    assert scores == pytest.approx([0.9, 0.8, 0.425])


def test_linear_leaves_overlaps_at_or_below_the_threshold():
    keep, scores = run([A, B, C], [0.9, 0.85, 0.8], iou_threshold=0.5)
    assert keep == [0, 1, 2] and scores == pytest.approx([0.9, 0.85, 0.8])


def test_gaussian_decays_every_overlap():
    keep, scores = run([A, B, C], [0.9, 0.85, 0.8], method="gaussian")
    assert keep == [0, 2, 1]
    assert scores == pytest.approx([0.9, 0.8, 0.85 * math.exp(-0.25 / 0.5)])


def test_decays_compound_over_successive_kept_boxes():
    b8, b6 = [0.0, 0.0, 10.0, 8.0], [0.0, 0.0, 10.0, 6.0]
    # IoU(A, b8) = 0.8, IoU(A, b6) = 0.6, IoU(b8, b6) = 60 / 80 = 0.75
    keep, scores = run([A, b8, b6], [0.9, 0.8, 0.7], method="gaussian")
    s8 = 0.8 * math.exp(-0.64 / 0.5)
    s6 = 0.7 * math.exp(-0.36 / 0.5)
    assert s6 > s8  # so b6 is kept second and decays b8 once more
    assert keep == [0, 2, 1]
    assert scores == pytest.approx([0.9, s6, s8 * math.exp(-0.75 ** 2 / 0.5)])


def test_boxes_decayed_below_the_score_threshold_are_dropped():
    keep, scores = run([A, B, C], [0.9, 0.85, 0.8], score_threshold=0.5)
    assert keep == [0, 2] and scores == pytest.approx([0.9, 0.8])
    assert run([A], [0.4], score_threshold=0.5) == ([], [])


def test_empty_input():
    keep, scores = soft_nms(torch.zeros(0, 4), torch.zeros(0), method="gaussian",
                            iou_threshold=0.5, sigma=0.5, score_threshold=0.0)
    assert keep.shape == (0,) and scores.shape == (0,)


def test_classes_do_not_decay_each_other():
    boxes = torch.tensor([A, B, B])
    keep, scores = batched_soft_nms(boxes, torch.tensor([0.9, 0.85, 0.7]), torch.tensor([0, 1, 0]),
                                    method="linear", iou_threshold=0.3, sigma=0.5,
                                    score_threshold=0.0)
    # B of class 1 is untouched by A (class 0); the class-0 B decays by 1 - 0.5
    assert keep.tolist() == [0, 1, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.85, 0.35])


@pytest.mark.parametrize("kw, match", [
    (dict(method="hard"), "method"),
    (dict(method="gaussian", sigma=0.0), "sigma"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        run([A], [0.9], **kw)
