"""BitMasks, PolygonMasks, ROIMasks and polygon rasterisation."""
import numpy as np
import pytest
import torch

from sephnet.d2.structures import BitMasks, Boxes, PolygonMasks, ROIMasks, polygons_to_bitmask
from sephnet.d2.structures.masks import polygon_area, rasterize_polygons_within_box

SQUARE = [0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]
TRIANGLE = [2.0, 2.0, 8.0, 2.0, 2.0, 6.0]


def _ellipse(cx, cy, rx, ry, n=40):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1).reshape(-1)


# ---------------------------------------------------------------- polygons


@pytest.mark.parametrize("coords, n", [([0, 0, 1, 1], 4), ([0, 0, 1, 1, 2], 5), ([0, 0, 1, 0, 1, 1, 2], 7)])
def test_polygon_validation_errors(coords, n):
    with pytest.raises(ValueError, match=f"Cannot create a polygon from {n} coordinates"):
        PolygonMasks([[coords]])


def test_polygon_structure_errors():
    with pytest.raises(ValueError, match="PolygonMasks takes, per instance, a list of polygons"):
        PolygonMasks(np.zeros((1, 6)))
    with pytest.raises(ValueError, match="must be a list of polygons"):
        PolygonMasks([np.array(SQUARE)])


def test_polygons_are_float64_numpy_copies():
    src = torch.tensor(TRIANGLE, dtype=torch.float32)
    pm = PolygonMasks([[src, TRIANGLE]])
    for p in pm.polygons[0]:
        assert isinstance(p, np.ndarray) and p.dtype == np.float64
    pm.polygons[0][0][0] = 100
    assert src[0] == 2.0
    assert pm.to("cpu") is pm and pm.device == torch.device("cpu")


def test_polygon_area_shoelace():
    pm = PolygonMasks([[SQUARE], [TRIANGLE], [SQUARE, TRIANGLE]])
    assert pm.area().tolist() == [100.0, 12.0, 112.0]
    assert polygon_area(np.array([0.0, 4, 0]), np.array([0.0, 0, 3])) == 6.0


def test_polygon_bounding_boxes_and_nonempty():
    pm = PolygonMasks([[SQUARE], [TRIANGLE, [20, 1, 21, 1, 21, 3]], []])
    boxes = pm.get_bounding_boxes()
    assert isinstance(boxes, Boxes)
    assert boxes.tensor[:2].tolist() == [[0, 0, 10, 10], [2, 1, 21, 6]]
    # detectron2's convention for an instance without polygons
    assert boxes.tensor[2].tolist() == [float("inf"), float("inf"), 0, 0]
    assert pm.nonempty().tolist() == [True, True, False]


def test_polygon_indexing():
    pm = PolygonMasks([[SQUARE], [TRIANGLE], [SQUARE, TRIANGLE]])
    assert len(pm[1]) == 1 and pm[1].polygons[0][0].tolist() == TRIANGLE
    assert len(pm[1:]) == 2
    assert [len(p) for p in pm[[2, 0]]] == [2, 1]
    assert [len(p) for p in pm[torch.tensor([False, True, True])]] == [1, 2]
    assert [len(p) for p in pm[torch.tensor([2, 2], dtype=torch.int32)]] == [2, 2]
    with pytest.raises(ValueError, match="Unsupported tensor dtype"):
        pm[torch.tensor([0.0])]
    with pytest.raises(AssertionError):
        pm[torch.ones(1, 3, dtype=torch.bool)]
    with pytest.raises(TypeError, match="cannot be indexed by tuple"):
        pm[(0, 1)]
    assert len(PolygonMasks.cat([pm, pm[0]])) == 4
    assert [len(p) for p in iter(pm)] == [1, 1, 2]


def test_polygons_to_bitmask_rectangle_and_empty():
    mask = polygons_to_bitmask([np.array([1.0, 1, 8, 1, 8, 6, 1, 6])], 10, 12)
    assert mask.dtype == bool and mask.shape == (10, 12)
    expected = np.zeros((10, 12), dtype=bool)
    expected[1:6, 1:8] = True  # the pixels whose area lies inside [1, 8) x [1, 6)
    assert (mask == expected).all()
    assert not polygons_to_bitmask([], 4, 5).any()
    assert polygons_to_bitmask([], 4, 5).shape == (4, 5)


def test_rasterize_within_box_scales_polygon_into_grid():
    poly = [np.array(SQUARE)]
    full = rasterize_polygons_within_box(poly, np.array([0.0, 0, 10, 10], dtype=np.float32), 5)
    assert full.dtype == torch.bool and full.all()
    # the square covers the top-left quarter of a box twice its size
    quarter = rasterize_polygons_within_box(poly, np.array([0.0, 0, 20, 20], dtype=np.float32), 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(quarter, expected)
    # anisotropic scaling: box 20 wide, 10 high -> left half of the grid
    half = rasterize_polygons_within_box(poly, np.array([0.0, 0, 20, 10], dtype=np.float32), 4)
    assert half[:, :2].all() and not half[:, 2:].any()
    assert poly[0].tolist() == SQUARE  # input untouched


def _boundary_band(mask: torch.Tensor) -> torch.Tensor:
    """Pixels within one pixel (8-neighbourhood) of the edge of a bool (H, W) mask."""
    m = mask.float()[None, None]
    dilated = torch.nn.functional.max_pool2d(m, 3, stride=1, padding=1)
    eroded = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)
    return (dilated != eroded)[0, 0]


def test_polygon_crop_and_resize_agrees_with_bitmask_crop_and_resize():
    big_triangle = [10.0, 10.0, 40.0, 10.0, 10.0, 30.0]
    polys = PolygonMasks([[_ellipse(30, 25, 18, 12)], [big_triangle], [_ellipse(40, 40, 8, 15), SQUARE]])
    boxes = torch.tensor([[10.0, 10, 50, 40], [5, 5, 45, 35], [0, 0, 50, 56]])
    size = 28
    from_polys = polys.crop_and_resize(boxes, size)
    from_bits = BitMasks.from_polygon_masks(polys, 60, 64).crop_and_resize(boxes, size)
    assert from_polys.shape == from_bits.shape == (3, size, size)
    assert from_polys.dtype == from_bits.dtype == torch.bool
    for i in range(3):
        differ = from_polys[i] != from_bits[i]
        assert from_polys[i].sum() > 50
        # both rasterise the same shape; they may disagree only along its boundary
        assert not (differ & ~_boundary_band(from_polys[i])).any(), i
        assert differ.sum() <= 0.15 * from_polys[i].sum(), (i, differ.sum())


def test_polygon_crop_and_resize_empty_and_length_check():
    out = PolygonMasks([]).crop_and_resize(torch.zeros(0, 4), 7)
    assert out.shape == (0, 7, 7) and out.dtype == torch.bool
    with pytest.raises(AssertionError, match="2 boxes for 1 masks"):
        PolygonMasks([[SQUARE]]).crop_and_resize(torch.zeros(2, 4), 7)


# ---------------------------------------------------------------- bitmasks


def test_bitmasks_basic_api():
    t = torch.zeros(3, 6, 8)
    t[0, 1:3, 2:5] = 1
    t[2, 5, 7] = 1
    bm = BitMasks(t)
    assert bm.tensor.dtype == torch.bool and tuple(bm.image_size) == (6, 8) and len(bm) == 3
    assert bm.nonempty().tolist() == [True, False, True]
    assert bm.get_bounding_boxes().tensor.tolist() == [[2, 1, 5, 3], [0, 0, 0, 0], [7, 5, 8, 6]]
    assert len(bm[1]) == 1 and len(bm[torch.tensor([True, False, True])]) == 2
    assert len(BitMasks.cat([bm, bm[0:1]])) == 4
    assert len(list(iter(bm))) == 3
    assert BitMasks(np.ones((1, 2, 2))).device == torch.device("cpu")
    with pytest.raises(ValueError, match="N, H, W"):
        BitMasks(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="returns a tensor with shape"):
        bm[torch.tensor([[0]])][0]  # indexing that yields a 4-D tensor
    with pytest.raises(ValueError, match="empty list"):
        BitMasks.cat([])


def test_bitmasks_from_polygon_masks_matches_polygons_to_bitmask():
    polys = PolygonMasks([[SQUARE], [TRIANGLE]])
    bm = BitMasks.from_polygon_masks(polys, 12, 12)
    assert bm.tensor.shape == (2, 12, 12)
    assert torch.equal(bm.tensor[1], torch.from_numpy(polygons_to_bitmask([np.array(TRIANGLE)], 12, 12)))
    assert bm.tensor[0, :10, :10].all() and not bm.tensor[0, 10:].any()
    assert BitMasks.from_polygon_masks([], 3, 4).tensor.shape == (0, 3, 4)


def test_bitmask_crop_and_resize_exact_region():
    t = torch.zeros(2, 16, 16, dtype=torch.bool)
    t[0, 4:12, 4:12] = True
    t[1, :, :8] = True  # left half
    bm = BitMasks(t)
    out = bm.crop_and_resize(torch.tensor([[4.0, 4, 12, 12], [0, 0, 16, 16]]), 4)
    assert out.dtype == torch.bool and out.shape == (2, 4, 4)
    assert out[0].all()
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, :2] = True
    assert torch.equal(out[1], expected)
    with pytest.raises(ValueError, match="1 boxes for 2 masks"):
        bm.crop_and_resize(torch.zeros(1, 4), 4)


# ---------------------------------------------------------------- ROI masks


def test_roi_masks_index_and_paste():
    rm = ROIMasks(torch.ones(2, 4, 4))
    assert len(rm) == 2 and len(rm[1:]) == 1 and rm.device == torch.device("cpu")
    with pytest.raises(ValueError, match="3 dimension"):
        ROIMasks(torch.ones(4, 4))
    with pytest.raises(ValueError, match="returns a tensor with shape"):
        rm[0]
    bm = rm.to_bitmasks(torch.tensor([[2.0, 2, 6, 6], [0, 0, 3, 5]]), 8, 10)
    assert isinstance(bm, BitMasks) and bm.tensor.shape == (2, 8, 10)
    expected0 = torch.zeros(8, 10, dtype=torch.bool)
    expected0[2:6, 2:6] = True
    assert torch.equal(bm.tensor[0], expected0)
    assert bm.get_bounding_boxes().tensor[1].tolist() == [0, 0, 3, 5]
