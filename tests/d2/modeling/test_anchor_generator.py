import math

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    BufferList,
    DefaultAnchorGenerator,
    build_anchor_generator,
)
from sephnet.d2.structures import Boxes

R2 = math.sqrt(2.0)


def _cell(size: float):
    """Hand-derived cell anchors for ratios (0.5, 1, 2): w = size*sqrt(2) for ratio 0.5, etc."""
    half = size / 2
    return [
        [-half * R2, -half / R2, half * R2, half / R2],  # ratio 0.5: w = s*sqrt2, h = s/sqrt2
        [-half, -half, half, half],  # ratio 1
        [-half / R2, -half * R2, half / R2, half * R2],  # ratio 2
    ]


def _shift(box, cx, cy):
    return [box[0] + cx, box[1] + cy, box[2] + cx, box[3] + cy]


def _toy_generator(offset: float) -> DefaultAnchorGenerator:
    return DefaultAnchorGenerator(
        sizes=[[8.0], [16.0]], aspect_ratios=[0.5, 1.0, 2.0], strides=[4, 8], offset=offset
    )


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_two_level_anchor_coordinates(offset):
    gen = _toy_generator(offset)
    feats = [torch.zeros(2, 5, 2, 3), torch.zeros(2, 5, 1, 2)]  # (H, W) = (2, 3) and (1, 2)
    level0, level1 = gen(feats)
    assert isinstance(level0, Boxes) and isinstance(level1, Boxes)
    assert level0.tensor.shape == (2 * 3 * 3, 4) and level1.tensor.shape == (1 * 2 * 3, 4)
    assert level0.tensor.dtype == torch.float32

    cell8, cell16 = _cell(8.0), _cell(16.0)
    o4, o8 = offset * 4, offset * 8
    expected0 = torch.tensor(
        [
            _shift(cell8[0], o4, o4),  # location (y=0, x=0), ratio 0.5
            _shift(cell8[1], o4, o4),
            _shift(cell8[2], o4, o4),
            _shift(cell8[0], o4 + 4, o4),  # next location is x + stride (row-major)
        ]
    )
    assert torch.allclose(level0.tensor[:4], expected0, atol=1e-5)
    # The last anchor: location (y=1, x=2), ratio 2.
    assert torch.allclose(
        level0.tensor[-1], torch.tensor(_shift(cell8[2], o4 + 8, o4 + 4)), atol=1e-5
    )
    # Row 1 starts at index 3 locations * 3 anchors = 9.
    assert torch.allclose(level0.tensor[9], torch.tensor(_shift(cell8[0], o4, o4 + 4)), atol=1e-5)

    expected1 = torch.tensor([_shift(c, o8 + dx, o8) for dx in (0, 8) for c in cell16])
    assert torch.allclose(level1.tensor, expected1, atol=1e-5)


def test_cell_anchor_order_area_and_ratio():
    gen = DefaultAnchorGenerator(sizes=[32, 64], aspect_ratios=[0.25, 1.0, 3.0], strides=[16])
    cell = list(gen.cell_anchors)[0]
    assert cell.shape == (6, 4) and cell.dtype == torch.float32
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    sizes = [32, 32, 32, 64, 64, 64]
    ratios = [0.25, 1.0, 3.0] * 2
    for i in range(6):
        assert float(w[i] * h[i]) == pytest.approx(sizes[i] ** 2, rel=1e-5)
        assert float(h[i] / w[i]) == pytest.approx(ratios[i], rel=1e-5)
    assert torch.allclose(cell[:, :2], -cell[:, 2:])  # centred at the origin


def test_cell_anchors_are_not_in_state_dict_but_follow_the_module():
    gen = _toy_generator(0.5)
    assert list(gen.state_dict().keys()) == []
    assert len(list(gen.buffers())) == 2
    assert gen.num_anchors == [3, 3] and gen.num_cell_anchors == [3, 3]
    assert gen.box_dim == 4
    gen = gen.to(torch.float64)
    assert list(gen.cell_anchors)[0].dtype == torch.float64


def test_buffer_list():
    bl = BufferList([torch.zeros(2), torch.ones(3)])
    assert len(bl) == 2
    assert [t.tolist() for t in bl] == [[0.0, 0.0], [1.0, 1.0, 1.0]]
    assert bl.state_dict() == {}


def test_from_config_with_fpn_sizes():
    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    shapes = [ShapeSpec(channels=8, stride=s) for s in (4, 8, 16, 32, 64)]
    gen = build_anchor_generator(cfg, shapes)
    assert isinstance(gen, DefaultAnchorGenerator)
    assert gen.strides == [4, 8, 16, 32, 64]
    assert gen.offset == cfg.MODEL.ANCHOR_GENERATOR.OFFSET == 0.0
    assert gen.num_anchors == [3] * 5
    side = list(gen.cell_anchors)[4][1, 2] - list(gen.cell_anchors)[4][1, 0]
    assert float(side) == pytest.approx(512.0)
    assert ANCHOR_GENERATOR_REGISTRY.get("DefaultAnchorGenerator") is DefaultAnchorGenerator


def test_default_config_broadcasts_all_sizes_to_every_level():
    cfg = get_cfg()  # SIZES = [[32, 64, 128, 256, 512]]: one entry -> used for every level
    gen = DefaultAnchorGenerator(cfg, [ShapeSpec(stride=16), ShapeSpec(stride=32)])
    assert gen.num_anchors == [15, 15]
    assert torch.equal(list(gen.cell_anchors)[0], list(gen.cell_anchors)[1])


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[1.0], strides=[4, 8, 16])
    with pytest.raises(ValueError):
        DefaultAnchorGenerator(sizes=[], aspect_ratios=[1.0], strides=[4])
    with pytest.raises(TypeError):
        DefaultAnchorGenerator(sizes=32, aspect_ratios=[1.0], strides=[4])
    with pytest.raises(ValueError):
        DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[4], offset=1.0)
