"""Visualizer: output size, where boxes and masks are painted, argument checks."""

import numpy as np
import pytest
import torch

from sephnet.d2.data.catalog import Metadata
from sephnet.d2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from sephnet.d2.utils.visualizer import ColorMode, Visualizer

H, W = 60, 80


def _blank():
    return np.full((H, W, 3), 128, dtype=np.uint8)


def test_box_outline_is_drawn_on_the_edges_only():
    out = (
        Visualizer(_blank())
        .overlay_instances(
            boxes=np.array([[10.0, 10.0, 50.0, 40.0]]), assigned_colors=[(1.0, 0.0, 0.0)]
        )
        .get_image()
    )
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    changed = np.any(out != 128, axis=2)
    assert changed[10, 20:40].any() and changed[40, 20:40].any()  # top and bottom edges
    assert not changed[20:30, 20:40].any()  # inside untouched
    assert not changed[50:, :].any() and not changed[:, 60:].any()  # far outside untouched
    assert out[10, 30, 0] > out[10, 30, 2]  # red-ish edge


def test_instance_predictions_tint_the_mask_and_scale_the_output():
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([[20.0, 20.0, 40.0, 40.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([1])
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 25:35, 25:35] = True
    inst.pred_masks = masks
    meta = Metadata(name="vis").set(thing_classes=["a", "b"], thing_colors=[(0, 0, 0), (0, 255, 0)])
    out = Visualizer(
        _blank(), meta, instance_mode=ColorMode.SEGMENTATION
    ).draw_instance_predictions(inst)
    img = out.get_image()
    assert img.shape == (H, W, 3)
    inside, outside = img[29, 30].astype(int), img[5, 70].astype(int)
    assert inside[1] > inside[0] + 40  # green tint of class 1
    assert tuple(outside) == (128, 128, 128)
    big = Visualizer(_blank(), scale=2.0).draw_instance_predictions(inst).get_image()
    assert big.shape == (2 * H, 2 * W, 3)


def test_dataset_dict_with_polygons_and_mask_types():
    dic = {
        "annotations": [
            {
                "bbox": [5, 5, 20, 10],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]],
            },
        ]
    }
    img = Visualizer(_blank()).draw_dataset_dict(dic).get_image()
    assert np.any(img[8:12, 10:20] != 128)
    polys = PolygonMasks([[np.array([5, 5, 25, 5, 25, 15, 5, 15], dtype=np.float64)]])
    bits = BitMasks(torch.zeros(1, H, W, dtype=torch.bool))
    for masks in (polys, bits):
        Visualizer(_blank()).overlay_instances(masks=masks).get_image()


def test_mismatched_instance_counts_raise():
    with pytest.raises(ValueError, match="different numbers"):
        Visualizer(_blank()).overlay_instances(boxes=np.zeros((2, 4)), labels=["only one"])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        Visualizer(_blank()).overlay_instances(boxes=np.zeros((2, 5)))


def _distance_to_mask_edge(mask):
    """Chebyshev distance (pixels) of every pixel to the nearest pixel of the other kind."""
    import cv2

    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_C, 3)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_C, 3)
    return np.where(mask, inside, outside)


def test_mask_fill_has_the_blended_colour_inside_and_nothing_outside():
    # an L-shaped region: the fill must follow the mask, not its bounding box
    mask = np.zeros((H, W), dtype=bool)
    mask[10:50, 10:30] = True
    mask[35:50, 30:70] = True
    vis = Visualizer(_blank())
    out = vis.overlay_instances(
        masks=[mask], assigned_colors=[(0.0, 0.0, 1.0)], alpha=0.8
    ).get_image().astype(int)

    far = _distance_to_mask_edge(mask) >= 3  # beyond the anti-aliased outline
    # blue at alpha 0.8 over grey 128: 0.8 * (0, 0, 255) + 0.2 * 128 = (25.6, 25.6, 229.6)
    assert (np.abs(out[mask & far] - [25.6, 25.6, 229.6]) <= 1).all()
    assert (out[~mask & far] == 128).all()
    # the outline runs along the edge in a darker blue (0.7 x the fill colour)
    edge = _distance_to_mask_edge(mask) == 1
    assert (out[edge & mask][:, 2] < 229).mean() > 0.5


def test_small_instance_label_goes_below_its_box():
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([[30.0, 10.0, 50.0, 25.0]]))  # 20 x 15 px: small
    inst.scores = torch.tensor([0.75])
    inst.pred_classes = torch.tensor([0])
    meta = Metadata(name="vis_label").set(thing_classes=["circle"])
    out = Visualizer(_blank(), meta).draw_instance_predictions(inst).get_image()
    changed = np.any(out != 128, axis=2)
    assert changed[26:40, 30:50].any()  # the label, under the box
    assert not changed[14:22, 34:46].any()  # inside the box (within its outline): untouched
    assert not changed[:8].any() and not changed[41:].any()  # above the box, below the label


def test_label_at_the_right_border_is_moved_inside_the_image():
    width = 200
    vis = Visualizer(np.full((H, width, 3), 128, dtype=np.uint8))
    # a small box in the top-right corner: its label goes under it, starting at x=182
    out = vis.overlay_instances(
        boxes=np.array([[182.0, 5.0, 199.0, 15.0]]), labels=["triangle 66%"]
    ).get_image()
    changed = np.any(out != 128, axis=2)
    cols = np.nonzero(changed[18:35].any(axis=0))[0]  # the label's rows
    assert len(cols) > 30  # the text is much wider than the box
    assert cols.max() <= width - 2  # nothing cut off at the right edge
    assert cols.min() < 182 - 30  # shifted left to fit
