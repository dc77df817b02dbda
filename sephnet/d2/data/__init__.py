"""Data loading for the core (detectron2.data): catalogs, mappers, loaders, transforms.

Importing it registers the built-in datasets (COCO splits under ``$DETECTRON2_DATASETS``).
"""
from . import transforms  # noqa: F401  (first, as upstream)

from .build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper

from . import datasets, detection_utils, samplers  # noqa: F401  (registers built-ins)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
