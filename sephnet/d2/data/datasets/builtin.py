"""Registration of the built-in datasets at their standard paths (detectron2.data.datasets.builtin).

The COCO instance splits are registered under ``$DETECTRON2_DATASETS`` (default
``datasets``), e.g. ``coco_2017_train`` -> ``datasets/coco/train2017`` +
``datasets/coco/annotations/instances_train2017.json``. Registration is lazy: nothing
is read until ``DatasetCatalog.get``.
"""
import os

from .builtin_meta import _get_builtin_metadata
from .coco import register_coco_instances

__all__ = ["register_all_coco"]

# name -> (image folder, json file), relative to the datasets root.
_PREDEFINED_SPLITS_COCO = {
    "coco": {
        "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
        "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
        "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
        "coco_2014_minival_100": (
            "coco/val2014",
            "coco/annotations/instances_minival2014_100.json",
        ),
        "coco_2014_valminusminival": (
            "coco/val2014",
            "coco/annotations/instances_valminusminival2014.json",
        ),
        "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
        "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
        "coco_2017_test": ("coco/test2017", "coco/annotations/image_info_test2017.json"),
        "coco_2017_test-dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
        "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
    },
}


def register_all_coco(root: str) -> None:
    """Register every COCO instance split under ``root`` with the COCO metadata."""
    for family, splits in _PREDEFINED_SPLITS_COCO.items():
        for name, (image_root, json_file) in splits.items():
            register_coco_instances(
                name,
                _get_builtin_metadata(family),
                os.path.join(root, json_file) if "://" not in json_file else json_file,
                os.path.join(root, image_root),
            )


if __name__.endswith(".builtin"):
    # Registered at import, as upstream does; paths are resolved now, files read later.
    register_all_coco(os.getenv("DETECTRON2_DATASETS", "datasets"))
