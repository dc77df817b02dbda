import math

import pytest
import torch

from sephnet.d2.modeling.poolers import (
    ROIPooler,
    _roi_pool,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from sephnet.d2.structures import Boxes


def _square(x0: float, y0: float, side: float):
    return [x0, y0, x0 + side, y0 + side]


def test_level_assignment_by_hand():
    boxes = Boxes(
        torch.tensor(
            [
                _square(0, 0, 112),  # floor(4 + log2(0.5)) = 3
                _square(10, 10, 224),  # floor(4 + log2(1 + 1e-8)) = 4
                _square(0, 0, 448),  # 5
                _square(0, 0, 1),  # floor(4 - 7.8) = -4 -> clamped to 2
                _square(0, 0, 5000),  # floor(8.48) = 8 -> clamped to 5
                _square(0, 0, 223.9),  # just below canonical: 3
                [0, 0, 56, 224],  # sqrt(area) = 112: 3
            ]
        )
    )
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.dtype == torch.int64
    assert levels.tolist() == [3 - 2, 4 - 2, 5 - 2, 0, 3, 1, 1]
    # Another canonical setting: side 112 is canonical at level 3.
    levels = assign_boxes_to_levels([boxes[:3]], 2, 6, 112, 3)
    assert levels.tolist() == [1, 2, 3]


def test_level_assignment_concatenates_images():
    a = Boxes(torch.tensor([_square(0, 0, 448)]))
    b = Boxes(torch.tensor([_square(0, 0, 112), _square(0, 0, 224)]))
    assert assign_boxes_to_levels([a, b], 2, 5, 224, 4).tolist() == [3, 1, 2]


def test_convert_boxes_to_pooler_format():
    a = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    empty = Boxes(torch.zeros((0, 4)))
    b = Boxes(torch.tensor([[9.0, 10.0, 11.0, 12.0]]))
    rois = convert_boxes_to_pooler_format([a, empty, b])
    expected = torch.tensor(
        [[0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 6.0, 7.0, 8.0], [2.0, 9.0, 10.0, 11.0, 12.0]]
    )
    assert torch.equal(rois, expected)


def _pyramid(num_images: int = 2, channels: int = 3, image_size: int = 128):
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    feats = [
        torch.randn(num_images, channels, int(image_size * s), int(image_size * s)) for s in scales
    ]
    return scales, feats


@pytest.mark.parametrize("pooler_type", ["ROIAlign", "ROIAlignV2", "ROIPool"])
def test_output_follows_input_order_across_levels(pooler_type):
    scales, feats = _pyramid()
    pooler = ROIPooler(5, scales, sampling_ratio=0, pooler_type=pooler_type, canonical_box_size=32)
    img0 = Boxes(
        torch.tensor(
            [_square(3, 5, 100), _square(1, 1, 20), _square(0, 0, 127), _square(30, 40, 50)]
        )
    )
    img1 = Boxes(torch.tensor([_square(60, 2, 8), _square(4, 4, 120), _square(10, 20, 64)]))
    out = pooler(feats, [img0, img1])
    assert out.shape == (7, 3, 5, 5)

    levels = assign_boxes_to_levels([img0, img1], 2, 5, 32, 4)
    assert levels.tolist() == [3, 1, 3, 2, 0, 3, 3]  # the boxes really span all levels
    rois = convert_boxes_to_pooler_format([img0, img1])
    for i in range(7):
        lvl = int(levels[i])
        alone = pooler.level_poolers[lvl](feats[lvl], rois[i : i + 1])
        assert torch.allclose(out[i], alone[0], atol=1e-6), f"box {i} (level {lvl})"


def test_single_level_uses_its_only_pooler():
    feats = [torch.randn(1, 2, 16, 16)]
    pooler = ROIPooler((3, 4), [1 / 8], sampling_ratio=2, pooler_type="ROIAlignV2")
    boxes = [Boxes(torch.tensor([_square(0, 0, 500), _square(8, 8, 16)]))]
    out = pooler(feats, boxes)
    assert out.shape == (2, 2, 3, 4)
    rois = convert_boxes_to_pooler_format(boxes)
    assert torch.allclose(out, pooler.level_poolers[0](feats[0], rois))


def test_empty_inputs_give_correctly_shaped_zero_outputs():
    scales, feats = _pyramid()
    pooler = ROIPooler(7, scales, sampling_ratio=0, pooler_type="ROIAlignV2")
    out = pooler(feats, [Boxes(torch.zeros((0, 4))), Boxes(torch.zeros((0, 4)))])
    assert out.shape == (0, 3, 7, 7)
    no_images = [f[:0] for f in feats]
    out = pooler(no_images, [])
    assert out.shape == (0, 3, 7, 7) and out.dtype == feats[0].dtype


def test_constructor_attributes_and_level_pooler_types():
    pooler = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2")
    assert (pooler.min_level, pooler.max_level) == (2, 5)
    assert pooler.output_size == (7, 7)
    assert (pooler.canonical_box_size, pooler.canonical_level) == (224, 4)
    assert isinstance(pooler.level_poolers, torch.nn.ModuleList) and len(pooler.level_poolers) == 4
    assert all(p.aligned for p in pooler.level_poolers)
    assert not any(p.aligned for p in ROIPooler(7, [1 / 16], 0, "ROIAlign").level_poolers)
    assert pooler.state_dict() == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(output_size=7, scales=[1 / 3], sampling_ratio=0, pooler_type="ROIAlignV2"),  # not 2**k
        dict(output_size=7, scales=[1 / 4, 1 / 16], sampling_ratio=0, pooler_type="ROIAlignV2"),
        dict(output_size=7, scales=[1 / 4], sampling_ratio=0, pooler_type="ROIAlignRotated"),
        dict(output_size=(7, 7, 7), scales=[1 / 4], sampling_ratio=0, pooler_type="ROIAlign"),
    ],
)
def test_invalid_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ROIPooler(**kwargs)


def test_forward_argument_checks():
    scales, feats = _pyramid()
    pooler = ROIPooler(7, scales, 0, "ROIAlignV2")
    boxes = [Boxes(torch.tensor([_square(0, 0, 10)]))] * 2
    with pytest.raises(TypeError):
        pooler(tuple(feats), boxes)
    with pytest.raises(ValueError):
        pooler(feats[:3], boxes)
    with pytest.raises(ValueError):
        pooler(feats, boxes[:1])


def _c_round(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _roi_pool_reference(feat, roi, out_h, out_w, scale):
    """Scalar loops following torchvision's CPU roi_pool kernel."""
    b = int(roi[0])
    x0, y0, x1, y1 = (_c_round(float(v) * scale) for v in roi[1:])
    roi_w, roi_h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    height, width = feat.shape[-2:]
    out = torch.zeros(feat.shape[1], out_h, out_w)
    for ph in range(out_h):
        for pw in range(out_w):
            hs = min(max(math.floor(ph * bin_h) + y0, 0), height)
            he = min(max(math.ceil((ph + 1) * bin_h) + y0, 0), height)
            ws = min(max(math.floor(pw * bin_w) + x0, 0), width)
            we = min(max(math.ceil((pw + 1) * bin_w) + x0, 0), width)
            if he <= hs or we <= ws:
                continue
            out[:, ph, pw] = feat[b, :, hs:he, ws:we].amax(dim=(1, 2))
    return out


def test_roi_pool_matches_loop_reference():
    feat = torch.randn(2, 3, 10, 12)
    rois = torch.tensor(
        [
            [0.0, 0.0, 0.0, 40.0, 40.0],
            [1.0, 6.0, 2.0, 30.0, 9.0],  # 6 * 0.25 = 1.5 rounds away from zero to 2
            [0.0, -20.0, -10.0, 10.0, 70.0],  # partly outside the map
            [1.0, 60.0, 50.0, 90.0, 80.0],  # fully outside: all bins empty -> zeros
            [0.0, 13.0, 13.0, 13.0, 13.0],  # degenerate box: one cell
        ]
    )
    out = _roi_pool(feat, rois, (3, 4), 0.25)
    assert out.shape == (5, 3, 3, 4)
    for i in range(len(rois)):
        assert torch.allclose(out[i], _roi_pool_reference(feat, rois[i], 3, 4, 0.25)), f"roi {i}"
    assert torch.count_nonzero(out[3]) == 0
    out64 = _roi_pool(feat.double(), rois.double(), (3, 4), 0.25)
    assert out64.dtype == torch.float64 and torch.equal(out64, out.double())
