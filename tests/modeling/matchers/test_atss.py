"""ATSSMatcher (fixed and pre-fix) on hand-built anchor layouts, plus a slow-loop reference."""
import math
import statistics

import pytest
import torch

from sephnet.backend import Boxes, pairwise_iou
from sephnet.modeling.matchers.atss import ATSSMatcher, _nearest
from sephnet.modeling.matchers.base import centers_inside_gt


def candidate_list(matcher, gt, anchors, levels):
    """Sorted candidate indices of the first gt (duplicates kept)."""
    return sorted(matcher.candidate_indices(gt, anchors, levels)[0].tolist())


def strip(*spans):
    """Boxes on the horizontal strip y in [0, 10]: IoU of two of them is ov / (w1 + w2 - ov)."""
    return Boxes(torch.tensor([[x1, 0.0, x2, 10.0] for x1, x2 in spans]))


def test_thresholds_use_nearest_candidates_per_level_and_the_iou_floor():
    # gt [0, 20] (centre x = 10). k = 2 per level.
    # level 0 (width 10): p0 [0,10]   centre 5,  d 5,  IoU 10/20 = 1/2
    #                     p1 [-9,1]   centre -4, d 14, IoU 1/29 (candidate, but < 0.1)
    #                     p2 [40,50]  centre 45, d 35  (not a candidate)
    # level 1 (width 30): q0 [-5,25]  centre 10, d 0,  IoU 20/30 = 2/3
    #                     q1 [5,35]   centre 20, d 10, IoU 15/35 = 3/7 (centre on the edge)
    #                     q2 [60,90]  centre 75, d 65  (not a candidate)
    # Statistics over {1/2, 2/3, 3/7} (1/29 is below the floor): t = mu + sd ~ 0.6315,
    # below the best candidate 2/3, so only q0 is positive.
    gt = strip((0, 20))
    anchors = strip((0, 10), (-9, 1), (40, 50), (-5, 25), (5, 35), (60, 90))
    matcher = ATSSMatcher(topk=2)
    assert candidate_list(matcher, gt, anchors, [3, 3]) == [0, 1, 3, 4]
    values = [1 / 2, 2 / 3, 3 / 7]
    expected_t = statistics.fmean(values) + statistics.pstdev(values)
    candidate_iou = torch.tensor([[1 / 2, 1 / 29, 2 / 3, 3 / 7]])
    assert matcher.thresholds(candidate_iou).item() == pytest.approx(expected_t, abs=1e-6)
    idxs, labels = matcher(gt, anchors, [3, 3])
    assert labels.tolist() == [0, 0, 0, 1, 0, 0]
    assert idxs.tolist() == [0] * 6
    assert idxs.dtype == torch.int64 and labels.dtype == torch.int8


def test_threshold_is_capped_by_best_candidate_and_positives_come_from_all_anchors():
    # gt [0,0,20,10], area 200, centre (10, 5). k = 2 per level.
    # level 0: s0 [8,2,12,8]     centre (10,5)    d 0    IoU 24/200  = 0.12
    #          s1 [1,0,19,10]    centre (10,5)    d 0    IoU 180/200 = 0.9
    #          s2 [0,0,19.5,10]  centre (9.75,5)  d 0.25 IoU 195/200 = 0.975 (NOT a candidate)
    #          s3 [40,0,60,10]   far
    # level 1: t0 [0,0,18,10]    centre (9,5)     d 1    IoU 0.9
    #          t1 [2,0,20,10]    centre (11,5)    d 1    IoU 0.9
    #          t2 [40,0,58,10]   far
    # Candidates {0.12, 0.9, 0.9, 0.9}: mu + sd ~ 1.043 > 0.9, so t is capped at 0.9 (without
    # the cap nothing would be positive). Positives: s1, t0, t1 (0.9 >= 0.9) and s2, which is
    # not a candidate: positives are searched among all anchors.
    values = [0.12, 0.9, 0.9, 0.9]
    assert statistics.fmean(values) + statistics.pstdev(values) > 1.0
    gt = Boxes(torch.tensor([[0.0, 0.0, 20.0, 10.0]]))
    anchors = Boxes(
        torch.tensor(
            [
                [8.0, 2.0, 12.0, 8.0],
                [1.0, 0.0, 19.0, 10.0],
                [0.0, 0.0, 19.5, 10.0],
                [40.0, 0.0, 60.0, 10.0],
                [0.0, 0.0, 18.0, 10.0],
                [2.0, 0.0, 20.0, 10.0],
                [40.0, 0.0, 58.0, 10.0],
            ]
        )
    )
    matcher = ATSSMatcher(topk=2)
    assert candidate_list(matcher, gt, anchors, [4, 3]) == [0, 1, 4, 5]
    candidate_iou = torch.tensor([[0.12, 0.9, 0.9, 0.9]])
    assert matcher.thresholds(candidate_iou).item() == pytest.approx(0.9, abs=1e-6)
    idxs, labels = matcher(gt, anchors, [4, 3])
    assert labels.tolist() == [0, 1, 1, 0, 1, 1, 0]


def test_anchor_passing_two_gts_takes_the_higher_iou():
    # g0 [0,10], g1 [1,11]; one level, k = 7 (every anchor is a candidate).
    #            IoU g0        IoU g1
    # a0 [0,10]   1            9/11
    # a1 [0.4,10.4] 9.6/10.4   9.4/10.6    (centre 5.4, inside both)
    # a2 [1,11]   9/11         1
    # w  [-30,50] x4  1/8      1/8        (wide anchors pull mu + sd down)
    # t0 = mu + sd of {1, 12/13, 9/11, 1/8 x4} ~ 0.856: g0 passes a0, a1.
    # t1 = mu + sd of {9/11, 47/53, 1, 1/8 x4} ~ 0.845: g1 passes a1, a2.
    # a1 passes both and takes g0 (0.923 > 0.887).
    gts = strip((0, 10), (1, 11))
    anchors = strip((0, 10), (0.4, 10.4), (1, 11), *[(-30, 50)] * 4)
    v0 = [1, 9.6 / 10.4, 9 / 11] + [1 / 8] * 4
    v1 = [9 / 11, 9.4 / 10.6, 1] + [1 / 8] * 4
    t0 = statistics.fmean(v0) + statistics.pstdev(v0)
    t1 = statistics.fmean(v1) + statistics.pstdev(v1)
    assert v0[1] >= t0 and v1[1] >= t1 and v0[2] < t0 and v1[0] < t1
    idxs, labels = ATSSMatcher(topk=7)(gts, anchors, [7])
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert idxs[:3].tolist() == [0, 0, 1]


def test_centre_inside_test_is_inclusive():
    # gt [0,0,10,10]: a centre on the edge x = 10 is inside, x = 11 is outside.
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    anchors = strip((0, 10), (5, 15), (6, 16))
    assert centers_inside_gt(gt, anchors).tolist() == [[True, True, False]]
    # A lone candidate sets t = its own IoU: [5,15] (IoU 1/3, centre on the edge) is positive;
    # [6,16] (IoU 1/4, centre 11) passes the IoU test but not the centre test.
    assert ATSSMatcher(topk=1)(gt, strip((5, 15)), [1])[1].tolist() == [1]
    assert ATSSMatcher(topk=1)(gt, strip((6, 16)), [1])[1].tolist() == [0]


def test_anchor_above_threshold_with_centre_outside_is_negative():
    # gt [0,0,10,10]; one level, k = 2 (both anchors are candidates).
    # a0 [-5,-5,15,15]: centre (5,5) inside,   IoU 100/400 = 0.25
    # a1 [2,0,30,10]:   centre (16,5) outside, IoU 80/300  = 0.2667
    # Two values x < y give mu + sd = y, so t = 0.2667: a0 fails the IoU test and a1, the only
    # anchor at the threshold, fails the centre test -> no positive at all.
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    anchors = Boxes(torch.tensor([[-5.0, -5.0, 15.0, 15.0], [2.0, 0.0, 30.0, 10.0]]))
    matcher = ATSSMatcher(topk=2)
    assert candidate_list(matcher, gt, anchors, [2]) == [0, 1]
    candidate_iou = torch.tensor([[0.25, 80 / 300]])
    assert matcher.thresholds(candidate_iou).item() == pytest.approx(80 / 300, abs=1e-6)
    idxs, labels = matcher(gt, anchors, [2])
    assert labels.tolist() == [0, 0]


def test_empty_gt_gives_background_and_no_anchors_gives_empty_outputs():
    anchors = strip((0, 10), (5, 15), (20, 30))
    idxs, labels = ATSSMatcher(topk=9)(Boxes(torch.zeros(0, 4)), anchors, [2, 1])
    assert idxs.tolist() == [0, 0, 0] and labels.tolist() == [0, 0, 0]
    assert idxs.dtype == torch.int64 and labels.dtype == torch.int8
    idxs, labels = ATSSMatcher(topk=9)(strip((0, 10)), Boxes(torch.zeros(0, 4)), [0, 0])
    assert idxs.shape == (0,) and labels.shape == (0,)
    assert idxs.dtype == torch.int64 and labels.dtype == torch.int8


def test_level_sizes_must_add_up():
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        ATSSMatcher(topk=1)(strip((0, 10)), strip((0, 10), (5, 15)), [1])


@pytest.mark.parametrize("topk", [0, -3, 2.5, True])
def test_invalid_topk_is_rejected(topk):
    with pytest.raises(ValueError, match="topk"):
        ATSSMatcher(topk=topk)


def test_pre_fix_uses_nine_times_k_non_cumulative_offsets_all_candidates_and_strict_test():
    # Three levels of sizes [4, 2, 1]; k = 1 -> 9 per level in the pre-fix version, so every
    # anchor of a level is a candidate. Level 2 (index 6) is offset by n_1 = 2 instead of
    # n_0 + n_1 = 6: its candidate lands on index 0 + 2 = 2 (listed twice), never on 6.
    gt = strip((0, 10))
    anchors = strip((0, 10), (2, 12), (4, 14), (50, 60), (-1, 9), (60, 70), (0, 10))
    old = ATSSMatcher(topk=1, pre_fix=True)
    assert candidate_list(old, gt, anchors, [4, 2, 1]) == [0, 1, 2, 2, 3, 4, 5]
    # IoUs of the anchors: 1, 8/12, 6/14, 0, 9/11, 0, 1. Statistics over ALL candidates
    # (anchor 2 twice, zeros included), no cap, strict ">" test: t = mu + sd ~ 0.4774 + 0.3557
    # ~ 0.833, so 9/11 ~ 0.818 is negative and the two IoU-1 anchors are positive.
    iou = [1, 8 / 12, 6 / 14, 0, 9 / 11, 0, 1]
    values = [iou[i] for i in (0, 1, 2, 2, 3, 4, 5)]
    t = statistics.fmean(values) + statistics.pstdev(values)
    assert old.thresholds(torch.tensor([values])).item() == pytest.approx(t, abs=1e-6)
    _, labels = old(gt, anchors, [4, 2, 1])
    assert labels.tolist() == [int(v > t and v > 0.1) for v in iou]
    assert labels.tolist() == [1, 0, 0, 0, 0, 0, 1]
    # A single candidate at IoU x: mu + sd = x; the strict test rejects it, ">=" accepts it.
    single = strip((2, 12))
    assert ATSSMatcher(topk=1, pre_fix=True)(gt, single, [1])[1].tolist() == [0]
    assert ATSSMatcher(topk=1)(gt, single, [1])[1].tolist() == [1]


def test_nearest_breaks_ties_at_the_kth_distance_by_anchor_order():
    dist2 = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0], [0.0, 5.0, 2.0, 1.0, 4.0]])
    # Row 0: 0 (col 4), then three 1s tie for the last place -> the lowest column, 1.
    # Row 1: no tie -> cols 0 and 3.
    assert [sorted(r) for r in _nearest(dist2, 2).tolist()] == [[1, 4], [0, 3]]
    assert [sorted(r) for r in _nearest(dist2, 4).tolist()] == [[1, 2, 3, 4], [0, 2, 3, 4]]
    assert _nearest(dist2, 7).tolist() == [[0, 1, 2, 3, 4]] * 2  # k >= n: the whole level


def _slow_atss(gt, anchors, levels, k, min_iou):
    """Loop reference of the fixed ATSSMatcher in plain Python floats."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    def center(b):
        return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)

    thresholds = []
    for g in gt:
        gc = center(g)
        cand, start = [], 0
        for n in levels:
            by_distance = lambda i: (math.dist(center(anchors[i]), gc), i)  # noqa: E731
            cand += sorted(range(start, start + n), key=by_distance)[:k]
            start += n
        vals = [iou(g, anchors[i]) for i in cand]
        kept = [v for v in vals if v >= min_iou]
        mu = statistics.fmean(kept) if kept else 0.0
        sd = statistics.pstdev(kept) if kept else 0.0
        thresholds.append(min(mu + sd, max(vals)))
    labels, matched = [], []
    for a in anchors:
        cx, cy = center(a)
        best, best_g = -1.0, -1
        for j, g in enumerate(gt):
            v = iou(g, a)
            if v >= thresholds[j] and g[0] <= cx <= g[2] and g[1] <= cy <= g[3] and v > best:
                best, best_g = v, j
        labels.append(1 if best > min_iou else 0)
        matched.append(best_g)
    return labels, matched, thresholds


def _random_layout(gen, num_gt):
    levels, boxes = [], []
    for stride, size in ((8, 32), (16, 64)):
        count = 0
        for y in range(0, 64, stride):
            for x in range(0, 64, stride):
                for ratio in (0.5, 1.0, 2.0):
                    w, h = size * ratio**0.5, size / ratio**0.5
                    cx, cy = x + stride / 2, y + stride / 2
                    boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                    count += 1
        levels.append(count)
    xy = torch.rand(num_gt, 2, generator=gen) * 48
    wh = torch.rand(num_gt, 2, generator=gen) * 40 + 6
    gt = torch.cat([xy, xy + wh], dim=1)
    return Boxes(gt.double()), Boxes(torch.tensor(boxes, dtype=torch.float64)), levels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_layout_matches_a_slow_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    gt, anchors, levels = _random_layout(gen, num_gt=4)
    idxs, labels = ATSSMatcher(topk=27)(gt, anchors, levels)
    ref_labels, ref_matched, ref_t = _slow_atss(
        gt.tensor.tolist(), anchors.tensor.tolist(), levels, 27, 0.1
    )
    assert labels.tolist() == ref_labels
    assert sum(ref_labels) > 0  # the layout exercises positives
    iou = pairwise_iou(gt, anchors)
    centers = anchors.get_centers()
    for i in torch.nonzero(labels == 1).flatten().tolist():
        g = idxs[i].item()
        assert g == ref_matched[i]
        x1, y1, x2, y2 = gt.tensor[g].tolist()
        assert x1 <= centers[i, 0] <= x2 and y1 <= centers[i, 1] <= y2
        assert iou[g, i] >= ref_t[g] - 1e-12 and iou[g, i] > 0.1
