"""detector_postprocess and sem_seg_postprocess checked by value."""
import pytest
import torch

from sephnet.d2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from sephnet.d2.structures import Boxes, Instances


def _detections() -> Instances:
    # Network input 100 (h) x 200 (w); outputs requested at 50 x 400: scale_x 2, scale_y 0.5.
    out = Instances((100, 200))
    out.pred_boxes = Boxes(
        torch.tensor(
            [
                [10.0, 20.0, 50.0, 60.0],  # -> [20, 10, 100, 30]
                [150.0, 80.0, 260.0, 140.0],  # -> [300, 40, 520, 70] -> clipped [300, 40, 400, 50]
                [210.0, 10.0, 230.0, 20.0],  # -> x in [420, 460] -> clipped to zero width: dropped
            ]
        )
    )
    out.scores = torch.tensor([0.9, 0.8, 0.7])
    out.pred_classes = torch.tensor([0, 1, 2])
    return out


def test_boxes_are_scaled_clipped_and_empty_ones_dropped():
    result = detector_postprocess(_detections(), 50, 400)
    assert result.image_size == (50, 400)
    expected = torch.tensor([[20.0, 10.0, 100.0, 30.0], [300.0, 40.0, 400.0, 50.0]])
    assert torch.equal(result.pred_boxes.tensor, expected)
    assert torch.equal(result.scores, torch.tensor([0.9, 0.8]))
    assert torch.equal(result.pred_classes, torch.tensor([0, 1]))


def test_masks_are_pasted_into_the_output_image_at_the_scaled_boxes():
    detections = _detections()
    detections.pred_masks = torch.ones(3, 1, 28, 28)
    result = detector_postprocess(detections, 50, 400)
    masks = result.pred_masks
    assert masks.dtype == torch.bool and masks.shape == (2, 50, 400)
    # A constant-one mask covers exactly the pixels whose centres lie inside the box.
    expected = torch.zeros(2, 50, 400, dtype=torch.bool)
    expected[0, 10:30, 20:100] = True
    expected[1, 40:50, 300:400] = True
    assert torch.equal(masks, expected)


def test_mask_threshold_selects_pixels_above_it():
    # Box [20, 10, 100, 30]: one mask cell is 80/28 pixels wide, so the outermost pixel columns
    # (centres 0.5 px inside the box) sample the mask at 0.325 cells beyond its border, where
    # bilinear interpolation with zero padding gives 0.675 * 0.6 = 0.405 < 0.5. Rows are not
    # attenuated (cells are 20/28 px high). Kept: 78 columns x 20 rows.
    detections = _detections()[:1]
    detections.pred_masks = torch.full((1, 1, 28, 28), 0.6)
    assert detector_postprocess(detections, 50, 400, mask_threshold=0.5).pred_masks.sum() == 1560
    detections = _detections()[:1]
    detections.pred_masks = torch.full((1, 1, 28, 28), 0.6)
    assert detector_postprocess(detections, 50, 400, mask_threshold=0.7).pred_masks.sum() == 0


def test_proposal_boxes_are_used_when_there_are_no_pred_boxes():
    proposals = Instances((10, 10))
    proposals.proposal_boxes = Boxes(torch.tensor([[1.0, 1.0, 4.0, 4.0]]))
    proposals.objectness_logits = torch.tensor([1.0])
    result = detector_postprocess(proposals, 20, 30)
    assert torch.equal(result.proposal_boxes.tensor, torch.tensor([[3.0, 2.0, 12.0, 8.0]]))


def test_missing_boxes_raise():
    bare = Instances((10, 10))
    bare.scores = torch.tensor([1.0])
    with pytest.raises(ValueError, match="pred_boxes"):
        detector_postprocess(bare, 10, 10)


def test_sem_seg_postprocess_crops_padding_then_resizes():
    logits = torch.full((3, 8, 8), 100.0)
    logits[:, :4, :6] = torch.arange(3.0).view(3, 1, 1)  # the real 4 x 6 image
    out = sem_seg_postprocess(logits, (4, 6), 12, 18)
    assert out.shape == (3, 12, 18)
    # The constant per-class values survive bilinear resizing; padding (100) never leaks in.
    assert torch.allclose(out, torch.arange(3.0).view(3, 1, 1).expand(3, 12, 18))
