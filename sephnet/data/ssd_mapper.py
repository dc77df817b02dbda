"""The training mapper of SSD's augmentation pipeline (``MODEL.SEPH.SSD.AUGMENT.ENABLED``).

Per dataset dict::

    read image -> [PhotometricDistortion] -> RandomExpand -> MinIoURandomCrop
               -> resize to S x S -> [RandomFlip]
    boxes follow every step; boxes whose centre is not strictly inside the final image (i.e.
    outside the crop) are dropped, the others clipped to it; empty boxes are dropped.

The bracketed steps follow ``MODEL.SEPH.AUGMENT.PHOTOMETRIC`` (its probability and amounts)
and ``INPUT.RANDOM_FLIP``. Boxes only: masks and keypoints are refused at setup.
"""
import copy
import logging
from typing import Any, Dict, List

import numpy as np
import torch

from sephnet.backend import BoxMode, Boxes, CfgNode, Instances, configurable
from sephnet.backend import detection_utils as utils
from sephnet.backend import transforms as T

from .photometric import PhotometricDistortion
from .ssd_augmentation import MinIoURandomCrop, RandomExpand, centres_inside

__all__ = ["SSDDatasetMapper"]

logger = logging.getLogger(__name__)


class SSDDatasetMapper:
    """Maps a dataset dict to ``{**dict without annotations, "image": (3, S, S) uint8 tensor,
    "instances": Instances(gt_boxes, gt_classes)}`` through SSD's pipeline (module docstring).
    Crowd annotations are dropped, as in detectron2's training mapper."""

    @configurable
    def __init__(self, *, augmentations: List[Any], image_format: str):
        """
        Args:
            augmentations: the pipeline; augmentations that need boxes receive them.
            image_format: :func:`read_image` format.
        """
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        logger.info("[SSDDatasetMapper] augmentations: %s", augmentations)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        ssd, photometric = cfg.MODEL.SEPH.SSD, cfg.MODEL.SEPH.AUGMENT.PHOTOMETRIC
        augmentations = []
        if photometric.PROB > 0:
            augmentations.append(
                PhotometricDistortion(
                    photometric.PROB,
                    brightness_delta=photometric.BRIGHTNESS_DELTA,
                    contrast_range=tuple(photometric.CONTRAST_RANGE),
                    saturation_range=tuple(photometric.SATURATION_RANGE),
                    hue_delta=photometric.HUE_DELTA,
                    image_format=cfg.INPUT.FORMAT,
                )
            )
        augmentations += [
            RandomExpand(ssd.AUGMENT.EXPAND_PROB, ssd.AUGMENT.EXPAND_MAX_RATIO, fill=cfg.MODEL.PIXEL_MEAN),
            MinIoURandomCrop(tuple(ssd.AUGMENT.CROP_MIN_IOUS), ssd.AUGMENT.CROP_MIN_SIZE),
            T.Resize((ssd.INPUT_SIZE, ssd.INPUT_SIZE)),
        ]
        if cfg.INPUT.RANDOM_FLIP != "none":
            augmentations.append(
                T.RandomFlip(
                    horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                    vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
                )
            )
        return dict(augmentations=augmentations, image_format=cfg.INPUT.FORMAT)

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Map one dataset dict (see the class docstring); the input is not modified."""
        record = copy.deepcopy(dataset_dict)
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        annotations = [a for a in record.pop("annotations", []) if a.get("iscrowd", 0) == 0]
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
            dtype=np.float64,
        ).reshape(-1, 4)
        classes = np.array([a["category_id"] for a in annotations], dtype=np.int64)
        state = T.AugInput(image, boxes=boxes)
        self.augmentations(state)
        image, boxes = state.image, np.asarray(state.boxes, dtype=np.float64).reshape(-1, 4)
        height, width = image.shape[:2]
        keep = centres_inside(boxes, (0, 0, width, height))
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        instances.gt_boxes.clip((height, width))
        instances.gt_classes = torch.as_tensor(classes[keep])
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        record["instances"] = utils.filter_empty_instances(instances)
        return record
