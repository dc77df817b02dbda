"""Centre-size conversions and the all-pairs GIoU, by hand."""
import pytest
import torch

from sephnet.layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, pairwise_giou


def test_cxcywh_and_xyxy_convert_both_ways():
    xyxy = torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.2, 0.1, 0.6, 0.3]], dtype=torch.float64)
    cxcywh = torch.tensor([[0.25, 0.75, 0.5, 0.5], [0.4, 0.2, 0.4, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), xyxy)


def test_pairwise_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], dtype=torch.float64)
    # a0/b0: inter .25, union .5, hull .5 -> .5; a0/b1: disjoint, union .75, hull 1 -> -.25
    # a1/b0 and a1/b1: inter .25, union 1, hull 1 -> .25
    expected = torch.tensor([[0.5, -0.25], [0.25, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(pairwise_giou(a, b), expected)
    far = torch.tensor([[3.0, 3.0, 4.0, 4.0]], dtype=torch.float64)
    # disjoint unit squares in a 4x4 hull: 0 - (16 - 2) / 16
    assert pairwise_giou(far, torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)).item() == pytest.approx(-14 / 16)


def test_pairwise_giou_refuses_inverted_boxes():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="boxes2"):
        pairwise_giou(good, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
