"""paste_masks_in_image on hand-made masks and against a bilinear reference."""
import math

import numpy as np
import pytest
import torch

from sephnet.d2.layers import paste_masks_in_image
from sephnet.d2.layers.mask_ops import _do_paste_mask


def reference_paste(mask: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """Sample an M x M mask stretched over ``box`` at every pixel centre (bilinear, zero
    outside the mask), i.e. grid_sample(align_corners=False) written out by hand."""
    m = mask.shape[0]
    x0, y0, x1, y1 = box
    out = np.zeros((height, width))

    def cell(r, c):
        return mask[r, c] if 0 <= r < m and 0 <= c < m else 0.0

    for py in range(height):
        v = (py + 0.5 - y0) / (y1 - y0) * m - 0.5
        for px in range(width):
            u = (px + 0.5 - x0) / (x1 - x0) * m - 0.5
            r0, c0 = math.floor(v), math.floor(u)
            fr, fc = v - r0, u - c0
            out[py, px] = (
                (1 - fr) * (1 - fc) * cell(r0, c0)
                + (1 - fr) * fc * cell(r0, c0 + 1)
                + fr * (1 - fc) * cell(r0 + 1, c0)
                + fr * fc * cell(r0 + 1, c0 + 1)
            )
    return out


def test_mask_of_ones_fills_exactly_its_box():
    out = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[1.0, 1.0, 3.0, 4.0]]), (5, 6))
    expected = torch.zeros(1, 5, 6, dtype=torch.bool)
    expected[0, 1:4, 1:3] = True
    assert out.dtype == torch.bool
    assert torch.equal(out, expected)


def test_box_partly_outside_the_image_is_clipped():
    out = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[-2.0, -2.0, 2.0, 2.0]]), (4, 4))
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, :2, :2] = True
    assert torch.equal(out, expected)
    beyond = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[2.0, 3.0, 9.0, 8.0]]), (4, 4))
    # Only pixel (3, 3) is inside: at (3, 2) the mask's corner cell is read with weight
    # 0.7 (rows) * 0.64 (columns) < 0.5, the rest being the zero padding around the mask.
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 3, 3] = True
    assert torch.equal(beyond, expected)
    assert reference_paste(np.ones((2, 2)), [2.0, 3.0, 9.0, 8.0], 4, 4)[3, 2] < 0.5


def test_negative_threshold_returns_soft_uint8_masks():
    out = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[1.0, 1.0, 3.0, 4.0]]), (5, 6), threshold=-1)
    assert out.dtype == torch.uint8
    # Row centre 1.5 samples 5/6 of the mask edge (the rest is zero padding): 212.5 -> 212.
    assert out[0, 1, 1].item() == 212 and out[0, 2, 1].item() == 255 and out[0, 0, 0].item() == 0


def test_random_masks_match_reference():
    masks = torch.rand(3, 5, 5)
    boxes = torch.tensor([[2.3, 1.7, 11.2, 9.9], [-3.0, 4.0, 6.5, 15.0], [7.0, 0.2, 7.9, 1.1]])
    out = paste_masks_in_image(masks, boxes, (12, 14), threshold=0.5)
    for i in range(3):
        ref = reference_paste(masks[i].numpy(), boxes[i].tolist(), 12, 14)
        decided = np.abs(ref - 0.5) > 1e-4
        assert np.array_equal(out[i].numpy()[decided], (ref >= 0.5)[decided])


def test_skip_empty_region_equals_full_image_paste():
    masks = torch.rand(2, 1, 6, 6)
    boxes = torch.tensor([[3.2, 2.1, 9.0, 7.7], [1.0, 4.0, 5.5, 11.0]])
    full, region = _do_paste_mask(masks, boxes, 13, 12, skip_empty=False)
    assert region == ()
    partial, (rows, cols) = _do_paste_mask(masks, boxes, 13, 12, skip_empty=True)
    torch.testing.assert_close(partial, full[:, rows, cols])
    outside = torch.ones(13, 12, dtype=torch.bool)
    outside[rows, cols] = False
    assert torch.all(full[:, outside] == 0)
    ref = reference_paste(masks[0, 0].numpy(), boxes[0].tolist(), 13, 12)
    np.testing.assert_allclose(full[0].numpy(), ref, atol=1e-5)


def test_empty_input_and_errors():
    out = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (7, 9))
    assert out.shape == (0, 7, 9) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="square"):
        paste_masks_in_image(torch.zeros(1, 28, 14), torch.zeros(1, 4), (7, 9))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(torch.zeros(2, 4, 4), torch.zeros(1, 4), (7, 9))


def test_accepts_boxes_object_with_tensor_attribute():
    class FakeBoxes:
        tensor = torch.tensor([[1.0, 1.0, 3.0, 4.0]])

        def __len__(self):
            return 1

    out = paste_masks_in_image(torch.ones(1, 2, 2), FakeBoxes(), (5, 6))
    assert out[0].sum().item() == 6
