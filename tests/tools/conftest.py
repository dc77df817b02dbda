"""A tiny registered COCO dataset for the tools' tests."""
import json

import cv2
import numpy as np
import pytest

from sephnet.backend import DatasetCatalog, register_coco_instances

TINY = "tools_tiny"


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """Two 64x64 grey images, each with one bright 32x30 square (category id 7, 'square'),
    registered as ``tools_tiny``; returns the config overrides that train and test on it."""
    root = tmp_path_factory.mktemp("tiny_coco")
    images, annotations = [], []
    for i in range(2):
        image = np.full((64, 64, 3), 40, np.uint8)
        image[10 + i:40 + i, 12:44] = 200
        cv2.imwrite(str(root / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        poly = [12, 10 + i, 44, 10 + i, 44, 40 + i, 12, 40 + i]
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 0,
                            "bbox": [12, 10 + i, 32, 30], "area": 960, "segmentation": [poly]})
    (root / "ann.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 7, "name": "square"}]}))
    if TINY not in DatasetCatalog.list():
        register_coco_instances(TINY, {}, str(root / "ann.json"), str(root))
    return ["DATASETS.TRAIN", f"('{TINY}',)", "DATASETS.TEST", f"('{TINY}',)",
            "MODEL.ROI_HEADS.NUM_CLASSES", "1", "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0"]
