"""nms / batched_nms against a brute-force greedy reference with torchvision's arithmetic
(IoU in float32 scalars, compared as double against the threshold)."""
import importlib

import numpy as np
import pytest
import torch

from sephnet.d2.layers import batched_nms, nms
from sephnet.d2.layers.torchvision_ops import torchvision_ops

nms_module = importlib.import_module("sephnet.d2.layers.nms")


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list:
    """Textbook greedy NMS: walk boxes by decreasing score (ties: input order); keep a box
    unless a kept box overlaps it with IoU > threshold. IoU uses float32 arithmetic in
    torchvision's order and is compared against the threshold as a double."""
    b = boxes.numpy().astype(np.float32)
    s = scores.tolist()
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    removed = np.zeros(len(s), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if removed[i]:
            continue
        keep.append(i)
        later = np.array(order[pos + 1 :], dtype=np.int64)
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[later, 2]) - np.maximum(b[i, 0], b[later, 0]))
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[later, 3]) - np.maximum(b[i, 1], b[later, 1]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (area[i] + area[later] - inter)
        removed[later[iou.astype(np.float64) > threshold]] = True
    return keep


def reference_batched_nms(boxes, scores, idxs, threshold):
    keep = []
    for group in set(idxs.tolist()):
        members = [i for i in range(len(idxs)) if idxs[i] == group]
        keep += [members[k] for k in reference_nms(boxes[members], scores[members], threshold)]
    return sorted(keep, key=lambda i: (-float(scores[i]), i))


def random_boxes(n: int, size: float = 100.0, integer: bool = False) -> torch.Tensor:
    xy = torch.rand(n, 2) * size
    wh = torch.rand(n, 2) * size / 3 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes.round() if integer else boxes


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_reference_on_random_boxes(threshold):
    boxes = random_boxes(300)
    scores = torch.rand(300)
    assert nms_module._nms_pytorch(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_ties_in_scores_and_identical_boxes_keep_input_order():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30.0]])
    scores = torch.tensor([0.5, 0.9, 0.9, 0.5, 0.5])
    keep = nms_module._nms_pytorch(boxes, scores, 0.5)
    assert keep.tolist() == [1, 3] == reference_nms(boxes, scores, 0.5)
    assert keep.dtype == torch.int64


def test_nms_iou_exactly_at_threshold_is_kept():
    boxes = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 1.0]])  # IoU = 1 / 2 exactly
    scores = torch.tensor([0.9, 0.8])
    assert nms_module._nms_pytorch(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms_module._nms_pytorch(boxes, scores, 0.4999).tolist() == [0]


def test_nms_threshold_not_representable_in_float32_compares_like_double():
    # IoU = 3/10 in float32 is slightly above 0.3 (as a double), so it is suppressed.
    boxes = torch.tensor([[0, 0, 10, 1], [0, 0, 3, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert float(torch.tensor(3.0) / torch.tensor(10.0)) > 0.3
    assert nms_module._nms_pytorch(boxes, scores, 0.3).tolist() == [0] == reference_nms(boxes, scores, 0.3)


def test_nms_many_boxes_spanning_blocks_matches_reference(monkeypatch):
    monkeypatch.setattr(nms_module, "_BLOCK", 16)
    boxes = random_boxes(200, size=60.0, integer=True)  # integer boxes: many exact IoU ties
    scores = torch.randint(0, 20, (200,)).float()  # many exact score ties
    for threshold in (0.25, 0.5):
        assert nms_module._nms_pytorch(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_empty_input_and_degenerate_boxes():
    empty = nms_module._nms_pytorch(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    # Zero-area boxes give IoU 0/0 = NaN, which never suppresses (as in torchvision).
    boxes = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1.0]])
    assert nms_module._nms_pytorch(boxes, torch.tensor([0.2, 0.1]), 0.5).tolist() == [0, 1]


def test_nms_float64_boxes():
    boxes = random_boxes(100).double()
    scores = torch.rand(100, dtype=torch.float64)
    keep = nms_module._nms_pytorch(boxes, scores, 0.5)
    assert keep.tolist() == reference_nms(boxes.float(), scores.float(), 0.5)


def test_nms_rejects_bad_shapes(monkeypatch):
    monkeypatch.setattr(nms_module, "torchvision_ops", lambda: None)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


@pytest.mark.parametrize("num_boxes", [0, 1, 150, 1200])  # 1200 boxes take torchvision's per-group branch
def test_batched_nms_matches_per_group_reference(monkeypatch, num_boxes):
    monkeypatch.setattr(nms_module, "torchvision_ops", lambda: None)
    boxes = random_boxes(num_boxes, integer=True)
    scores = torch.rand(num_boxes)
    idxs = torch.randint(0, 4, (num_boxes,))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert keep.dtype == torch.int64
    assert keep.tolist() == reference_batched_nms(boxes, scores, idxs, 0.5)


def test_batched_nms_never_suppresses_across_groups(monkeypatch):
    monkeypatch.setattr(nms_module, "torchvision_ops", lambda: None)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    # Negative coordinates and half-precision boxes are handled (boxes go to float32).
    shifted = (boxes - 50).half()
    assert batched_nms(shifted, scores, torch.tensor([2, 2, 1]), 0.5).tolist() == [0, 2]


def test_batched_nms_over_40000_boxes_uses_per_group_nms(monkeypatch):
    monkeypatch.setattr(nms_module, "torchvision_ops", lambda: None)
    calls = []
    original = nms_module.nms

    def recording_nms(boxes, scores, threshold):
        kept = original(boxes, scores, threshold)
        calls.append((boxes, kept))
        return kept

    monkeypatch.setattr(nms_module, "nms", recording_nms)
    num = 40000
    xy = torch.rand(num, 2) * 4000
    boxes = torch.cat([xy, xy + 5 + torch.rand(num, 2) * 20], dim=1)
    scores = torch.randperm(num).float() / num  # distinct scores: the order is unique
    idxs = torch.arange(num) % 2
    keep = batched_nms(boxes, scores, idxs, 0.3)
    assert [len(b) for b, _ in calls] == [num // 2, num // 2]
    expected = torch.cat([torch.nonzero(idxs == g)[:, 0][kept] for g, (_, kept) in enumerate(calls)])
    assert keep.tolist() == expected[scores[expected].argsort(descending=True)].tolist()
    # The per-group nms itself, brute-forced on a spatial subset of one group.
    window = torch.nonzero((idxs == 0) & (boxes[:, 0] < 600))[:, 0]
    assert original(boxes[window], scores[window], 0.3).tolist() == reference_nms(boxes[window], scores[window], 0.3)


@pytest.mark.parametrize("threshold", [-0.1, 0.0, 0.005, 0.2, 0.9])
def test_nms_matches_reference_for_mixed_shapes_and_extreme_thresholds(threshold):
    # Tall, wide and tiny boxes spread over many y-bands, plus exact duplicates.
    num = 250
    xy = torch.rand(num, 2) * 200
    wh = torch.exp(torch.randn(num, 2) * 1.5) * 10
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[200:] = boxes[:50]
    scores = torch.rand(num)
    assert nms_module._nms_pytorch(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


@pytest.mark.skipif(torchvision_ops() is None, reason="cross-check needs a usable torchvision")
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision_kernel(threshold):
    boxes = random_boxes(500, integer=True)
    scores = torch.randint(0, 50, (500,)).float()
    expected = torchvision_ops().nms(boxes, scores, threshold)
    assert nms_module._nms_pytorch(boxes, scores, threshold).tolist() == expected.tolist()


def test_nms_flat_boxes_far_apart_in_y_still_found():
    # Heights of 1e-9 spread over 1e6 in y give ~1e15 candidate y-bands; overlapping pairs
    # must still be found (float64 boxes, so the heights survive).
    num = 200
    x = torch.rand(num // 2, dtype=torch.float64) * 50
    y = torch.arange(num // 2, dtype=torch.float64) * 1e4
    left = torch.stack([x, y, x + 10, y + 1e-9], dim=1)
    right = left + torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)  # IoU with left: 9 / 11
    boxes = torch.stack([left, right], dim=1).reshape(num, 4)
    scores = torch.rand(num, dtype=torch.float64)
    keep = nms_module._nms_pytorch(boxes, scores, 0.5)
    pair_scores = scores.view(-1, 2)
    expected = torch.arange(0, num, 2) + pair_scores.argmax(1)
    assert sorted(keep.tolist()) == sorted(expected.tolist())
