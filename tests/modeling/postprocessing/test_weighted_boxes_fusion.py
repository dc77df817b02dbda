"""Weighted boxes fusion against hand-computed clusters."""
import pytest
import torch

from sephnet.backend import batched_nms
from sephnet.modeling.postprocessing import weighted_boxes_fusion


def test_clusters_fused_by_score_weighted_mean_and_down_weighted_by_missing_sources():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],    # 0.9
        [50.0, 50.0, 60.0, 60.0],  # 0.3, alone
        [1.0, 0.0, 11.0, 10.0],    # 0.6, IoU 90 / 110 = 0.82 with the first: same cluster
        [1.0, 0.0, 11.0, 10.0],    # 0.8, other class
    ], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.3, 0.6, 0.8], dtype=torch.float64)
    classes = torch.tensor([0, 0, 0, 1])
    fused, fscores, fclasses, leaders = weighted_boxes_fusion(
        boxes, scores, classes, iou_threshold=0.55, num_sources=2
    )
    # cluster {0, 2}: box (0.9 b0 + 0.6 b2) / 1.5, score mean(0.9, 0.6) * 2/2;
    # class-1 box alone: 0.8 * 1/2; the far box alone: 0.3 * 1/2
    expected = [[0.4, 0.0, 10.4, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]]
    assert torch.allclose(fused, torch.tensor(expected, dtype=torch.float64))
    assert fscores.tolist() == pytest.approx([0.75, 0.4, 0.15])
    assert fclasses.tolist() == [0, 1, 0]
    assert leaders.tolist() == [0, 3, 1]


def test_a_box_is_matched_against_the_fused_box_not_the_first_member():
    # b0 = [0, 10] and b1 = [0, 9] (IoU 0.9) fuse to [0, 9.5]; b2 = [-1, 8] overlaps that
    # fused box by 8 / 10.5 = 0.762 > 0.75 (but b0 alone only by 8 / 11 = 0.727): it joins
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 9.0, 1.0], [-1.0, 0.0, 8.0, 1.0]],
                         dtype=torch.float64)
    scores = torch.tensor([0.5, 0.5, 0.4], dtype=torch.float64)
    fused, fscores, _, _ = weighted_boxes_fusion(boxes, scores, torch.zeros(3, dtype=torch.long),
                                                 iou_threshold=0.75, num_sources=3)
    assert len(fused) == 1
    # x0 = (0.5*0 + 0.5*0 + 0.4*-1) / 1.4, x1 = (0.5*10 + 0.5*9 + 0.4*8) / 1.4
    assert fused[0].tolist() == pytest.approx([-0.4 / 1.4, 0.0, 12.7 / 1.4, 1.0])
    assert fscores.tolist() == pytest.approx([(0.5 + 0.5 + 0.4) / 3])


def test_fusing_a_detection_set_with_itself_gives_it_back():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g, dtype=torch.float64) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(40, 2, generator=g, dtype=torch.float64) * 30], 1)
    scores = torch.rand(40, generator=g, dtype=torch.float64)
    classes = torch.randint(0, 3, (40,), generator=g)
    keep = batched_nms(boxes.float(), scores.float(), classes, 0.5)  # IoU <= 0.5 < 0.55 left
    b, s, c = boxes[keep], scores[keep], classes[keep]
    fused, fscores, fclasses, leaders = weighted_boxes_fusion(
        torch.cat([b, b]), torch.cat([s, s]), torch.cat([c, c]), iou_threshold=0.55,
        num_sources=2,
    )
    assert torch.allclose(fused, b) and torch.allclose(fscores, s)
    assert torch.equal(fclasses, c) and torch.equal(leaders, torch.arange(len(b)))


def test_empty_and_bad_sources():
    out = weighted_boxes_fusion(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                                iou_threshold=0.5)
    assert [tuple(t.shape) for t in out] == [(0, 4), (0,), (0,), (0,)]
    with pytest.raises(ValueError, match="num_sources"):
        weighted_boxes_fusion(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                              iou_threshold=0.5, num_sources=0)
