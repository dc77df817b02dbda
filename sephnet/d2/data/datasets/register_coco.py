"""Old import path of :func:`register_coco_instances` (detectron2.data.datasets.register_coco)."""
from .coco import register_coco_instances  # noqa: F401

__all__ = ["register_coco_instances"]
