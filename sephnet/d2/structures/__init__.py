"""Data structures of the portable core (detectron2.structures): boxes, instances, image lists
and masks."""
from sephnet.d2.structures.boxes import (
    Boxes,
    BoxMode,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)
from sephnet.d2.structures.image_list import ImageList
from sephnet.d2.structures.instances import Instances
from sephnet.d2.structures.masks import BitMasks, PolygonMasks, ROIMasks, polygons_to_bitmask

__all__ = [
    "Boxes",
    "BoxMode",
    "pairwise_iou",
    "pairwise_ioa",
    "pairwise_point_box_distance",
    "ImageList",
    "Instances",
    "BitMasks",
    "PolygonMasks",
    "ROIMasks",
    "polygons_to_bitmask",
]
