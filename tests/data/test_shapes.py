"""What only the shapes dataset promises: polygon segmentations, flat-painted shapes, every
class drawn. The checks it shares with clutter are in test_generated_datasets.py."""
from sephnet.data.shapes import SHAPES_CLASSES, ShapesParams, generate_shapes

from .test_generated_datasets import decoded_instances


def test_shapes_are_flat_painted_polygons_of_every_class(tmp_path):
    generate_shapes(str(tmp_path), ShapesParams(num_train=12, num_val=1))
    classes = set()
    for _, image, anns in decoded_instances(str(tmp_path)):
        for ann, mask in anns:
            classes.add(ann["category_id"])
            (poly,) = ann["segmentation"]
            assert len(poly) >= 6 and len(poly) % 2 == 0
            # the shape is painted flat (small noise) inside its mask
            assert image[mask].astype(float).std(axis=0).max() < 6
    assert classes == set(range(1, len(SHAPES_CLASSES) + 1))
