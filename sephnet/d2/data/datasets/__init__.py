"""Dataset loaders and the built-in registrations (detectron2.data.datasets).

Importing this package registers the built-in COCO splits (see :mod:`.builtin`).
"""
from .coco import convert_to_coco_json, load_coco_json, register_coco_instances
from . import builtin as _builtin  # noqa: F401  (registers the built-in datasets)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
