"""ATSSMatcher3 / ATSSMatcher4 / DynamicMatcher (IoUStatisticsMatcher) on hand-built layouts."""
import math
import statistics

import pytest
import torch

from sephnet.backend import Boxes, pairwise_iou
from sephnet.modeling.matchers.iou_statistics import IoUStatisticsMatcher


def strip(*spans):
    """Boxes on the strip y in [0, 10]: the IoU of two of them is ov / (w1 + w2 - ov)."""
    return Boxes(torch.tensor([[x1, 0.0, x2, 10.0] for x1, x2 in spans]))


def make(ignore_band, level_weighted, lo=0.4, hi=0.5):
    return IoUStatisticsMatcher(
        iou_thresholds=(lo, hi), ignore_band=ignore_band, level_weighted=level_weighted
    )


# gt [0,10]; width-10 anchors [s, s+10] have IoU (10-s)/(10+s) and centre 5+s (inside iff
# s <= 5); one more anchor [-7,3] (IoU 3/17, centre -2, outside) and [9,19] (IoU 1/19 < 0.1).
#   s=2: 2/3 inside | s=4: 3/7 inside | s=5: 1/3 inside (edge) | s=6: 1/4 outside
#   s=8: 1/9 outside | [-7,3]: 3/17 outside | s=9: 1/19 (not in the statistics)
# Statistics over the IoUs > 0.1: mu + sd ~ 0.5107, capped at hi = 0.5, so t = 0.5.
# m = hi - lo = 0.1: ignore band (0.4, 0.5) for s > 0.2.
SINGLE_GT = strip((0, 10))
SINGLE_ANCHORS = strip((2, 12), (4, 14), (5, 15), (6, 16), (8, 18), (-7, 3), (9, 19))
SINGLE_IOUS = [2 / 3, 3 / 7, 1 / 3, 1 / 4, 1 / 9, 3 / 17, 1 / 19]


def test_threshold_is_mean_plus_std_over_all_anchors_above_the_floor_capped_at_hi():
    kept = [v for v in SINGLE_IOUS if v > 0.1]
    raw = statistics.fmean(kept) + statistics.pstdev(kept)
    assert raw > 0.5  # so the cap decides
    iou = pairwise_iou(SINGLE_GT, SINGLE_ANCHORS)
    assert make(True, False).thresholds(iou, [7]).item() == pytest.approx(0.5)
    # With hi = 0.7 the cap is inactive and t = mu + sd.
    assert make(True, False, 0.6, 0.7).thresholds(iou, [7]).item() == pytest.approx(raw, abs=1e-6)


def test_atss3_ignore_band_and_atss4_without_it():
    # s=2 (2/3 >= 0.5) positive; s=4 (3/7 in (0.4, 0.5), > 0.2) ignored by ATSSMatcher3 and
    # negative for ATSSMatcher4; s=5 (1/3 < 0.4) negative; outside centres count as IoU 0.
    idxs, labels = make(True, False)(SINGLE_GT, SINGLE_ANCHORS, [7])
    assert labels.tolist() == [1, -1, 0, 0, 0, 0, 0]
    assert idxs.dtype == torch.int64 and labels.dtype == torch.int8
    _, labels4 = make(False, False)(SINGLE_GT, SINGLE_ANCHORS, [7])
    assert labels4.tolist() == [1, 0, 0, 0, 0, 0, 0]


def test_ignore_band_needs_iou_above_floor_plus_margin():
    # lo = 0.2, hi = 0.5 -> margin 0.3, band (t - 0.3, t) = (0.2, 0.5) but only for s > 0.4:
    # s=4 (3/7 = 0.43) is ignored, s=5 (1/3) and s=6 (outside) are not.
    _, labels = make(True, False, lo=0.2, hi=0.5)(SINGLE_GT, SINGLE_ANCHORS, [7])
    assert labels.tolist() == [1, -1, 0, 0, 0, 0, 0]
    _, labels = make(True, False, lo=0.25, hi=0.5)(SINGLE_GT, SINGLE_ANCHORS, [7])
    # margin 0.25: band (0.25, 0.5) and s > 0.35 -> s=4 ignored; s=5 (0.333 < 0.35) negative.
    assert labels.tolist() == [1, -1, 0, 0, 0, 0, 0]
    _, labels = make(True, False, lo=0.1, hi=0.5)(SINGLE_GT, SINGLE_ANCHORS, [7])
    # margin 0.4: band (0.1, 0.5) but s > 0.5 is required -> nothing is ignored.
    assert labels.tolist() == [1, 0, 0, 0, 0, 0, 0]


def test_centre_outside_gt_makes_the_anchor_take_another_gt():
    # g0 [0,10], g1 [8,28]. Anchor a [4,16] (centre 10): IoU g0 6/16 = 0.375, centre on g0's
    # edge (inside); IoU g1 8/(12+20-8) = 1/3, centre inside g1. Anchor b [5,17] (centre 11):
    # IoU g0 5/17 = 0.294 but centre outside g0, so its IoU with g0 counts as 0 and it takes
    # g1 with IoU 9/(12+20-9) = 9/23 = 0.391.
    # lo = 0.0, hi = 0.3: two IoUs x < y above the floor give mu + sd = y, which is above 0.3
    # for both gts, so both thresholds are capped at 0.3: a -> g0 (0.375), b -> g1 (0.391).
    gts = strip((0, 10), (8, 28))
    anchors = strip((4, 16), (5, 17))
    idxs, labels = make(False, False, lo=0.0, hi=0.3)(gts, anchors, [2])
    assert labels.tolist() == [1, 1]
    assert idxs.tolist() == [0, 1]


def test_no_anchor_above_floor_gives_threshold_hi_and_no_positive():
    # Every anchor has IoU < 0.1 with the gt: t = 1.0 capped at hi = 0.5; nothing positive.
    gt = strip((0, 10))
    anchors = strip((9.5, 19.5), (30, 40))
    matcher = make(True, False)
    assert matcher.thresholds(pairwise_iou(gt, anchors), [2]).tolist() == [0.5]
    assert matcher(gt, anchors, [2])[1].tolist() == [0, 0]


def test_dynamic_matcher_weights_statistics_by_level_size():
    # gt [0,10]; lo, hi = 0.6, 0.7 (the cap stays inactive).
    # level 0 (n_0 = 5, weight 1): width-10 anchors at s = 1, 2, 3, 5, 8:
    #   IoU 9/11, 2/3, 7/13, 1/3, 1/9
    # level 1 (n_1 = 2, weight n_0 / n_1 = 2.5): [-5,15] IoU 1/2, [5,25] IoU 1/5
    # uniform:  t = mu + sd ~ 0.6867 -> s=2 (2/3) is below it
    # weighted: t = mu_w + sd_w ~ 0.6393 -> s=2 is positive
    level0 = [(1, 11), (2, 12), (3, 13), (5, 15), (8, 18)]
    level1 = [(-5, 15), (5, 25)]
    gt = strip((0, 10))
    anchors = strip(*level0, *level1)
    values = [9 / 11, 2 / 3, 7 / 13, 1 / 3, 1 / 9, 1 / 2, 1 / 5]
    weights = [1.0] * 5 + [2.5] * 2
    mu = sum(w * v for w, v in zip(weights, values)) / sum(weights)
    sd = math.sqrt(sum(w * (v - mu) ** 2 for w, v in zip(weights, values)) / sum(weights))
    uniform_t = statistics.fmean(values) + statistics.pstdev(values)
    assert mu + sd < 2 / 3 < uniform_t

    dynamic = make(False, True, 0.6, 0.7)
    iou = pairwise_iou(gt, anchors)
    assert dynamic.level_weights([5, 2], iou.device).tolist() == weights
    assert dynamic.thresholds(iou, [5, 2]).item() == pytest.approx(mu + sd, abs=1e-6)
    _, labels = dynamic(gt, anchors, [5, 2])
    # s=1 (9/11) and s=2 positive; [5,25] has its centre (15) outside.
    assert labels.tolist() == [1, 1, 0, 0, 0, 0, 0]
    _, labels4 = make(False, False, 0.6, 0.7)(gt, anchors, [5, 2])
    assert labels4.tolist() == [1, 0, 0, 0, 0, 0, 0]


def test_empty_gt_and_no_anchors():
    for matcher in (make(True, False), make(False, True)):
        idxs, labels = matcher(Boxes(torch.zeros(0, 4)), SINGLE_ANCHORS, [4, 3])
        assert idxs.tolist() == [0] * 7 and labels.tolist() == [0] * 7
        assert idxs.dtype == torch.int64 and labels.dtype == torch.int8
        idxs, labels = matcher(SINGLE_GT, Boxes(torch.zeros(0, 4)), [0, 0])
        assert idxs.shape == (0,) and labels.shape == (0,)
        assert idxs.dtype == torch.int64 and labels.dtype == torch.int8


@pytest.mark.parametrize("thresholds", [(0.5, 0.4), (0.3, 0.5, 0.7), (-0.1, 0.5), (0.4, 1.5)])
def test_invalid_iou_thresholds_are_rejected(thresholds):
    with pytest.raises(ValueError, match="IOU_THRESHOLDS"):
        IoUStatisticsMatcher(iou_thresholds=thresholds, ignore_band=False, level_weighted=False)


def _slow_reference(gt, anchors, levels, lo, hi, min_iou, ignore_band, level_weighted):
    """Loop reference in plain Python floats (docs/components.md#anchors-and-rpn read literally)."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    weight = []
    for n in levels:
        weight += [levels[0] / n if level_weighted else 1.0] * n
    thresholds = []
    for g in gt:
        pairs = [(iou(g, a), w) for a, w in zip(anchors, weight) if iou(g, a) > min_iou]
        if not pairs:
            thresholds.append(min(1.0, hi))
            continue
        total = sum(w for _, w in pairs)
        mu = sum(v * w for v, w in pairs) / total
        sd = math.sqrt(sum(w * (v - mu) ** 2 for v, w in pairs) / total)
        thresholds.append(min(mu + sd, hi))
    labels, matched = [], []
    for a in anchors:
        cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
        s, best = 0.0, 0
        for j, g in enumerate(gt):
            v = iou(g, a) if (g[0] <= cx <= g[2] and g[1] <= cy <= g[3]) else 0.0
            if v > s:
                s, best = v, j
        t = thresholds[best]
        if s > min_iou and s >= t:
            labels.append(1)
        elif ignore_band and t - (hi - lo) < s < t and s > min_iou + (hi - lo):
            labels.append(-1)
        else:
            labels.append(0)
        matched.append(best)
    return labels, matched, thresholds


@pytest.mark.parametrize(
    "ignore_band,level_weighted", [(True, False), (False, False), (False, True)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_layout_matches_a_slow_loop_reference(ignore_band, level_weighted, seed):
    gen = torch.Generator().manual_seed(seed)
    levels, boxes = [], []
    for stride, size in ((8, 24), (16, 48)):
        count = 0
        for y in range(0, 64, stride):
            for x in range(0, 64, stride):
                for ratio in (0.5, 1.0, 2.0):
                    w, h = size * ratio**0.5, size / ratio**0.5
                    cx, cy = x + stride / 2, y + stride / 2
                    boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                    count += 1
        levels.append(count)
    xy = torch.rand(3, 2, generator=gen, dtype=torch.float64) * 48
    wh = torch.rand(3, 2, generator=gen, dtype=torch.float64) * 40 + 6
    gt = Boxes(torch.cat([xy, xy + wh], dim=1))
    anchors = Boxes(torch.tensor(boxes, dtype=torch.float64))
    matcher = make(ignore_band, level_weighted)
    idxs, labels = matcher(gt, anchors, levels)
    ref_labels, ref_matched, ref_t = _slow_reference(
        gt.tensor.tolist(), boxes, levels, 0.4, 0.5, 0.1, ignore_band, level_weighted
    )
    assert labels.tolist() == ref_labels
    assert (labels == 1).sum() > 0
    assert (labels == -1).any() == ignore_band
    iou = pairwise_iou(gt, anchors)
    centers = anchors.get_centers()
    for i in torch.nonzero(labels == 1).flatten().tolist():
        g = idxs[i].item()
        assert g == ref_matched[i]
        x1, y1, x2, y2 = gt.tensor[g].tolist()
        assert x1 <= centers[i, 0] <= x2 and y1 <= centers[i, 1] <= y2
        assert iou[g, i] >= ref_t[g] - 1e-12 and iou[g, i] > 0.1
