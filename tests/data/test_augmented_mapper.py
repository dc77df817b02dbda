"""AugmentedDatasetMapper: every augmentation keeps boxes, masks and pixels together.

The tiny dataset has one flat colour per object (and per category) on a black
background (a rectangle and an L-shape per image), so an output instance's pixels can
be found by its colour: its box must be
the tight box of those pixels, and its mask must cover them.
"""
import os

import cv2
import numpy as np
import pytest
import torch

from sephnet.backend import BoxMode, structures
from sephnet.backend import transforms as T
from sephnet.data import AugmentedDatasetMapper, CutOut, PhotometricDistortion, RandomErase

# BGR colour of category c
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255), (0, 128, 255)]
SIZES = [(80, 120), (120, 80), (96, 96), (80, 120)]
polygons_to_bitmask = structures.polygons_to_bitmask


def _make_dataset(root):
    dicts = []
    for i, (h, w) in enumerate(SIZES):
        image = np.zeros((h, w, 3), np.uint8)
        rect = [8 + 4 * i, 10, 40 + 4 * i, 34]  # XYXY
        # non-convex, with axis-aligned edges (no thin tips that resampling could dim)
        ell = [[50, 40], [80, 40], [80, 50], [60, 50], [60, 72], [50, 72]]
        annotations = []
        for j, polygon in enumerate(
            [[rect[0], rect[1], rect[2], rect[1], rect[2], rect[3], rect[0], rect[3]], sum(ell, [])]
        ):
            category = 2 * i + j
            points = np.array(polygon, np.float64).reshape(-1, 2)
            mask = polygons_to_bitmask([np.array(polygon, float)], h, w)
            image[mask] = COLOURS[category]
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            annotations.append(
                {"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": category,
                 "iscrowd": 0, "segmentation": [polygon]}
            )
        path = os.path.join(str(root), f"{i}.png")
        cv2.imwrite(path, image)
        dicts.append({"file_name": path, "height": h, "width": w, "image_id": i, "annotations": annotations})
    return dicts


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _make_dataset(tmp_path_factory.mktemp("augmented_mapper"))


def _mapper(dataset, *, mix=(0.0, 0.0, 0.0), masks=True, augmentations=(), final=(), mask_format="polygon"):
    return AugmentedDatasetMapper(
        dataset=dataset,
        augmentations=[T.RandomFlip()] + list(augmentations),
        final_augmentations=list(final),
        image_format="BGR",
        use_instance_mask=masks,
        instance_mask_format=mask_format,
        mix_probs=mix,
    )


def _colour_pixels(image_chw, category):
    image = image_chw.permute(1, 2, 0).numpy().astype(int)
    return (np.abs(image - np.array(COLOURS[category])).max(-1) < 40)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def _check_consistency(out, masks):
    """The boxes, masks and pixels of each instance agree (see the module docstring).

    An object can appear twice (the same image drawn twice), so each instance is checked
    against the pixels of its colour inside its box (grown by the 1.5 px allowed for
    resampling blur): their tight box is the box; its mask covers them; with masks the
    box is the mask's tight box. And every pixel of a colour lies in a box of that class.
    Without masks a box can only follow the box: it is exact for the rectangles (even
    categories) and holds the pixels of the L-shapes (odd ones).
    """
    instances = out["instances"]
    assert len(instances) > 0
    image_hw = tuple(out["image"].shape[1:])
    assert instances.image_size == image_hw
    ys, xs = np.mgrid[: image_hw[0], : image_hw[1]]
    covered = {}
    for k in range(len(instances)):
        category = int(instances.gt_classes[k])
        box = instances.gt_boxes.tensor[k].numpy()
        near = (xs >= box[0] - 1.5) & (xs < box[2] + 1.5) & (ys >= box[1] - 1.5) & (ys < box[3] + 1.5)
        pixels = _colour_pixels(out["image"], category) & near
        covered[category] = covered.get(category, np.zeros(image_hw, bool)) | near
        if masks or category % 2 == 0:
            np.testing.assert_allclose(box, _tight_box(pixels), atol=1.5)
        else:
            tight = _tight_box(pixels)
            assert (tight[:2] >= box[:2] - 1.5).all() and (tight[2:] <= box[2:] + 1.5).all()
        if masks:
            mask = instances.gt_masks[k : k + 1]
            np.testing.assert_allclose(mask.get_bounding_boxes().tensor[0].numpy(), box, atol=1e-4)
            polygons = mask.polygons[0] if hasattr(mask, "polygons") else None
            dense = polygons_to_bitmask(polygons, *image_hw) if polygons is not None else mask.tensor[0].numpy()
            inside = dense[pixels].mean()
            assert inside > 0.9, f"category {category}: only {inside:.2f} of its pixels are in its mask"
    for category in range(len(COLOURS)):
        stray = _colour_pixels(out["image"], category) & ~covered.get(category, np.zeros(image_hw, bool))
        assert stray.sum() <= 2, f"{stray.sum()} pixels of category {category} are in none of its boxes"
    return set(covered)


@pytest.mark.parametrize("masks", [True, False])
@pytest.mark.parametrize("mix", ["none", "cutmix", "mosaic"])
def test_boxes_masks_and_pixels_move_together(dataset, mix, masks):
    probs = {"none": (0, 0, 0), "cutmix": (0, 1, 0), "mosaic": (0, 0, 1)}[mix]
    mapper = _mapper(dataset, mix=probs, masks=masks)
    categories = set()
    for seed in range(6):
        np.random.seed(seed)
        out = mapper(dataset[seed % 4])
        categories |= _check_consistency(out, masks)
        assert out["image"].dtype == torch.uint8
        assert not out["instances"].has("gt_masks") or masks
    if mix == "mosaic":
        assert len(categories) > 4  # objects of several source images appear


def test_mixup_keeps_instances_of_both_and_masks_match_boxes(dataset):
    np.random.seed(0)
    out = _mapper(dataset, mix=(1, 0, 0))(dataset[0])
    classes = sorted(out["instances"].gt_classes.tolist())
    assert classes[:2] == [0, 1] and len(classes) == 4  # the item's two objects and another image's
    assert tuple(out["image"].shape[1:]) == (120, 120)  # 80x120 and 120x80 (or 96, or 80) on one canvas
    boxes = out["instances"].gt_masks.get_bounding_boxes().tensor
    torch.testing.assert_close(boxes, out["instances"].gt_boxes.tensor)


def test_bitmask_format_and_resize_follow_the_masks(dataset):
    mapper = _mapper(dataset, mix=(0, 0, 1), mask_format="bitmask", augmentations=[T.ResizeShortestEdge(60)])
    for seed in range(3):
        np.random.seed(seed)
        _check_consistency(mapper(dataset[seed]), masks=True)


def test_photometric_and_occlusions_leave_annotations_alone(dataset):
    plain = _mapper(dataset)
    busy = _mapper(
        dataset,
        augmentations=[PhotometricDistortion(1.0, brightness_delta=0.1, contrast_range=(0.8, 1.2),
                                             saturation_range=(0.5, 1.5), hue_delta=0.1, image_format="BGR")],
        final=[RandomErase(1.0, area_range=(0.1, 0.2), aspect_range=(0.5, 2.0)), CutOut(1.0, num_holes=2, size=8)],
    )
    for seed in range(4):
        np.random.seed(seed)
        a = plain(dataset[seed])
        np.random.seed(seed)
        b = busy(dataset[seed])
        assert not torch.equal(a["image"], b["image"])
        torch.testing.assert_close(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert a["instances"].gt_classes.tolist() == b["instances"].gt_classes.tolist()


def test_same_seed_same_item_and_input_untouched(dataset):
    import copy

    mapper = _mapper(dataset, mix=(0.3, 0.3, 0.4))
    before = copy.deepcopy(dataset[1])
    np.random.seed(7)
    first = mapper(dataset[1])
    np.random.seed(7)
    second = mapper(dataset[1])
    assert torch.equal(first["image"], second["image"])
    torch.testing.assert_close(first["instances"].gt_boxes.tensor, second["instances"].gt_boxes.tensor)
    assert dataset[1]["annotations"][0]["bbox"] == before["annotations"][0]["bbox"]
    assert "annotations" not in first and first["image_id"] == 1


def test_constructor_errors(dataset):
    with pytest.raises(ValueError, match="sum to more than 1"):
        _mapper(dataset, mix=(0.5, 0.4, 0.2))
    with pytest.raises(ValueError, match="non-empty"):
        _mapper([], mix=(1, 0, 0))
    record = dict(dataset[0], sem_seg_file_name="x.png")
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        _mapper(dataset)(record)
