"""Boxes, BoxMode and the pairwise box metrics, against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from sephnet.d2.structures import Boxes, BoxMode, pairwise_ioa, pairwise_iou, pairwise_point_box_distance
from sephnet.d2.structures.boxes import matched_pairwise_iou, pairwise_intersection
from sephnet.d2.structures.errors import StructureError


def _slow_iou(a, b):
    """Reference IoU for two XYXY boxes given as python lists."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    if inter <= 0:
        return 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


def test_boxes_constructor_dtype_shape_and_empty():
    b = Boxes(torch.tensor([[0, 0, 1, 2]], dtype=torch.int64))
    assert b.tensor.dtype == torch.float32 and b.tensor.shape == (1, 4)
    assert Boxes(np.array([[1.0, 2, 3, 4]])).device == torch.device("cpu")
    for empty in (torch.empty(0), [], torch.zeros(0, 7)):
        assert Boxes(empty).tensor.shape == (0, 4)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 5), torch.zeros(1, 2, 4)])
def test_boxes_constructor_rejects_non_nx4(bad):
    with pytest.raises(ValueError, match="N, 4"):
        Boxes(bad)
    with pytest.raises(AssertionError):  # detectron2 users catching its assert still work
        Boxes(bad)
    assert issubclass(StructureError, ValueError) and issubclass(StructureError, AssertionError)


def test_area_clip_nonempty_centers_scale():
    b = Boxes(torch.tensor([[1.0, 2, 4, 6], [-5, -5, 30, 3], [2, 2, 2, 8]]))
    assert b.area().tolist() == [12.0, 280.0, 0.0]
    assert b.nonempty().tolist() == [True, True, False]
    assert b.nonempty(threshold=3.5).tolist() == [False, True, False]
    assert b.get_centers().tolist() == [[2.5, 4.0], [12.5, -1.0], [2.0, 5.0]]
    c = b.clone()
    c.clip((10, 20))  # (height, width)
    assert c.tensor.tolist() == [[1, 2, 4, 6], [0, 0, 20, 3], [2, 2, 2, 8]]
    assert b.tensor[1, 0] == -5  # clone is independent
    c.scale(2.0, 0.5)
    assert c.tensor.tolist() == [[2, 1, 8, 3], [0, 0, 40, 1.5], [4, 1, 4, 4]]


def test_clip_rejects_non_finite():
    b = Boxes(torch.tensor([[0.0, 0, float("inf"), 1]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        b.clip((5, 5))


def test_inside_box_with_threshold():
    b = Boxes(torch.tensor([[0.0, 0, 9, 9], [-1, 0, 5, 5], [0, 0, 10, 5], [2, 2, 3, 11]]))
    assert b.inside_box((10, 10)).tolist() == [True, False, False, False]
    assert b.inside_box((10, 10), boundary_threshold=1).tolist() == [True, True, True, False]


def test_indexing_len_iter_cat_to():
    t = torch.arange(20, dtype=torch.float32).view(5, 4)
    b = Boxes(t)
    assert len(b) == 5
    assert b[3].tensor.tolist() == [[12, 13, 14, 15]]
    assert b[1:3].tensor.shape == (2, 4)
    assert b[torch.tensor([True, False, True, False, False])].tensor[:, 0].tolist() == [0, 8]
    assert b[torch.tensor([4, 0])].tensor[:, 0].tolist() == [16, 0]
    assert [r.tolist() for r in b][2] == [8, 9, 10, 11]
    joined = Boxes.cat([b[0:2], b[4]])
    assert joined.tensor[:, 0].tolist() == [0, 4, 16]
    joined.tensor[0, 0] = 99
    assert b.tensor[0, 0] == 0  # cat never shares storage
    assert Boxes.cat([]).tensor.shape == (0, 4)
    assert b.to("cpu").tensor.dtype == torch.float32
    with pytest.raises(ValueError):
        Boxes.cat([b, t])
    with pytest.raises(ValueError, match="matrix"):
        b[torch.tensor([[0], [1]])]


def test_pairwise_iou_hand_values():
    a = Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 5, 5]]))
    b = Boxes(torch.tensor([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]]))
    expected = torch.tensor(
        [
            [25 / 175, 1.0, 0.0, 0.5],
            [0.0, 0.25, 0.0, 0.5],  # a[1] touches b[0] only at a corner: IoU 0
        ]
    )
    assert torch.allclose(pairwise_iou(a, b), expected)
    assert torch.allclose(pairwise_iou(b, a), expected.T)
    assert pairwise_intersection(a, b).tolist() == [[25, 100, 0, 50], [0, 25, 0, 25]]
    # IoA divides by the area of the second argument
    assert torch.allclose(pairwise_ioa(a, b), torch.tensor([[0.25, 1.0, 0.0, 1.0], [0.0, 0.25, 0.0, 0.5]]))


def test_pairwise_iou_zero_area_boxes_give_zero_not_nan():
    zero = Boxes(torch.tensor([[3.0, 3, 3, 3], [0, 0, 0, 10]]))
    other = Boxes(torch.tensor([[0.0, 0, 10, 10], [3, 3, 3, 3]]))
    iou = pairwise_iou(zero, other)
    ioa = pairwise_ioa(other, zero)
    assert iou.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert ioa.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_pairwise_empty_inputs():
    a = Boxes(torch.zeros(0, 4))
    b = Boxes(torch.tensor([[0.0, 0, 1, 1]]))
    assert pairwise_iou(a, b).shape == (0, 1)
    assert pairwise_iou(b, a).shape == (1, 0)
    assert pairwise_ioa(a, a).shape == (0, 0)


def test_pairwise_iou_matches_slow_reference_on_random_boxes():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(30, 2, generator=g) * 50
    wh = torch.rand(30, 2, generator=g) * 30
    t = torch.cat([xy, xy + wh], dim=1)
    boxes1, boxes2 = Boxes(t[:12]), Boxes(t[12:])
    fast = pairwise_iou(boxes1, boxes2)
    slow = torch.tensor([[_slow_iou(a, b) for b in t[12:].tolist()] for a in t[:12].tolist()])
    assert torch.allclose(fast, slow, atol=1e-6)
    assert torch.allclose(matched_pairwise_iou(boxes1, Boxes(t[12:24])), fast.diagonal(), atol=1e-6)


def test_matched_pairwise_iou_length_mismatch():
    with pytest.raises(ValueError, match="same number of entries, got 2, 1"):
        matched_pairwise_iou(Boxes(torch.zeros(2, 4)), Boxes(torch.zeros(1, 4)))


def test_pairwise_point_box_distance():
    points = torch.tensor([[2.0, 3.0], [20.0, 0.0]])
    boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]]))
    d = pairwise_point_box_distance(points, boxes)
    assert d.shape == (2, 1, 4)
    assert d[:, 0].tolist() == [[2, 3, 8, 7], [20, 0, -10, 10]]


@pytest.mark.parametrize("container", [list, tuple])
def test_boxmode_single_box_round_trip(container):
    xywh = container([10.0, 20.0, 30.0, 40.0])
    xyxy = BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert type(xyxy) is container and list(xyxy) == [10, 20, 40, 60]
    back = BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert list(back) == list(xywh)


def test_boxmode_array_and_tensor_keep_type_and_do_not_modify_input():
    arr = np.array([[1.0, 2, 3, 4], [0, 0, 1, 1]])
    out = BoxMode.convert(arr, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.tolist() == [[1, 2, 2, 2], [0, 0, 1, 1]]
    assert arr.tolist() == [[1, 2, 3, 4], [0, 0, 1, 1]]
    t = torch.tensor([[1.0, 2, 3, 4]])
    out_t = BoxMode.convert(t, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert isinstance(out_t, torch.Tensor) and out_t.tolist() == [[1, 2, 4, 6]]
    assert t.tolist() == [[1, 2, 3, 4]]
    assert BoxMode.convert(t, BoxMode.XYXY_ABS, BoxMode.XYXY_ABS) is t


def test_boxmode_rotated_conversions():
    # a 4x2 box rotated by 90 degrees encloses a 2x4 axis-aligned rectangle
    rot = torch.tensor([[10.0, 20.0, 4.0, 2.0, 90.0]])
    out = BoxMode.convert(rot, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    assert torch.allclose(out, torch.tensor([[9.0, 18.0, 11.0, 22.0]]), atol=1e-5)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    out30 = BoxMode.convert([0.0, 0.0, 4.0, 2.0, 30.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    w, h = 4 * c + 2 * s, 2 * c + 4 * s
    assert out30 == pytest.approx([-w / 2, -h / 2, w / 2, h / 2])
    xywha = BoxMode.convert(torch.tensor([[0.0, 0.0, 4.0, 2.0]]), BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    assert xywha.tolist() == [[2.0, 1.0, 4.0, 2.0, 0.0]]


def test_boxmode_errors():
    for rel in (BoxMode.XYXY_REL, BoxMode.XYWH_REL):
        with pytest.raises(AssertionError, match="Relative mode not yet supported"):
            BoxMode.convert([0, 0, 1, 1], rel, BoxMode.XYXY_ABS)
        with pytest.raises(ValueError, match="Relative mode"):
            BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_ABS, rel)
    with pytest.raises(ValueError, match="length 3"):
        BoxMode.convert([0, 0, 1], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    with pytest.raises(NotImplementedError):
        BoxMode.convert(torch.zeros(1, 5), BoxMode.XYWHA_ABS, BoxMode.XYWH_ABS)
    with pytest.raises(ValueError, match="must be 5"):
        BoxMode.convert(torch.zeros(1, 4), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
