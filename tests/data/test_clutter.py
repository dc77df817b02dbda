"""What only the clutter dataset promises: RLE segmentations of the visible parts, occlusion
that keeps a visible fraction, and its statistics. The checks it shares with shapes are in
test_generated_datasets.py."""
import json

import numpy as np

from sephnet.data import clutter
from sephnet.data.clutter import CLUTTER_CLASSES, ClutterParams, generate_clutter
from sephnet.data.statistics import dataset_statistics

from .test_generated_datasets import decoded_instances


def test_segmentations_are_rle_of_visible_parts_no_smaller_than_12_px(tmp_path):
    generate_clutter(str(tmp_path), ClutterParams(num_train=16, num_val=1))
    count = 0
    for info, _, anns in decoded_instances(str(tmp_path)):
        for ann, mask in anns:
            count += 1
            assert ann["segmentation"]["size"] == [info["height"], info["width"]]
            assert ann["area"] == mask.sum() >= 12
    assert count >= 16


def test_occluded_objects_keep_the_visible_fraction(tmp_path):
    # Objects are painted back to front; an annotation is the visible part of its object,
    # which keeps >= min_visible of the object's own area. The last object is whole, so
    # its mask equals the full polygon; earlier ones can only lose pixels.
    params = ClutterParams(num_train=0, num_val=6, min_objects=8, max_objects=8)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, 1, 0])))
    _, objects = clutter._draw_image(rng, params)
    assert len(objects) >= 4
    occluded = 0
    for k, (_, visible) in enumerate(objects):
        later = np.zeros_like(visible)
        for _, mask in objects[k + 1:]:
            later |= mask
        assert not (visible & later).any()
        occluded += int(visible.sum() > 0 and later.any())
    assert occluded >= 1


def test_generated_set_has_small_objects_every_class_and_varied_counts(tmp_path):
    generate_clutter(str(tmp_path), ClutterParams(num_train=30, num_val=1))
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        stats = dataset_statistics(json.load(f))
    assert set(stats["per_class"]) == set(CLUTTER_CLASSES)
    assert 0.2 < stats["small_fraction"] < 0.8
    assert stats["area_histogram"]["1024-4096"] > 0  # medium objects too
    assert stats["objects_per_image"]["max"] - stats["objects_per_image"]["min"] >= 3
    assert stats["box_aspect"]["p5"] < 0.8 and stats["box_aspect"]["p95"] > 1.25
