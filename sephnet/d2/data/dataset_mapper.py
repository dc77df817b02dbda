"""The default dataset-dict -> model-input mapping (detectron2.data.dataset_mapper)."""
import copy
import logging
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from sephnet.d2.config import configurable

from . import detection_utils as utils
from . import transforms as T

__all__ = ["DatasetMapper"]

logger = logging.getLogger(__name__)


class DatasetMapper:
    """Turn one dataset dict into the dict a detectron2 model consumes.

    ``__call__(dataset_dict)``:

    1. deep-copies the dict (the dataset is never modified);
    2. reads ``file_name`` in ``image_format`` and checks it against height/width;
    3. applies the augmentations; ``image`` becomes a ``(C, H, W)`` uint8 tensor of the
       augmented image;
    4. transforms precomputed proposals into ``proposals`` if configured;
    5. in training, transforms the non-crowd annotations with the same transforms and
       stores them as ``instances`` (``gt_boxes``, ``gt_classes``, ``gt_masks`` when
       ``use_instance_mask``), dropping empty ones; in inference, drops annotations.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str,
        use_instance_mask: bool = False,
        use_keypoint: bool = False,
        instance_mask_format: str = "polygon",
        keypoint_hflip_indices: Optional[np.ndarray] = None,
        precomputed_proposal_topk: Optional[int] = None,
        recompute_boxes: bool = False,
    ):
        """
        Args:
            is_train: training (keep and transform annotations) or inference.
            augmentations: augmentations or fixed transforms, applied in order.
            image_format: a :func:`detection_utils.read_image` format, e.g. "BGR".
            use_instance_mask: keep instance segmentations as ``gt_masks``.
            use_keypoint: keypoints are not supported by the portable core (must be False).
            instance_mask_format: "polygon" or "bitmask".
            keypoint_hflip_indices: unused without keypoints (kept for the signature).
            precomputed_proposal_topk: keep this many precomputed proposals per image.
            recompute_boxes: replace ``gt_boxes`` by the tight boxes of the masks (needs
                ``use_instance_mask``; used after cropping).

        Raises:
            ValueError: ``recompute_boxes`` without masks, or ``use_keypoint``.
        """
        if recompute_boxes and not use_instance_mask:
            raise ValueError("DatasetMapper(recompute_boxes=True) requires use_instance_mask=True.")
        if use_keypoint:
            raise ValueError(
                "DatasetMapper(use_keypoint=True) (MODEL.KEYPOINT_ON): keypoints are not "
                "supported by sephnet's portable core; use real detectron2."
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.proposal_topk = precomputed_proposal_topk
        self.recompute_boxes = recompute_boxes
        mode = "training" if is_train else "inference"
        logger.info("[DatasetMapper] Augmentations used in %s: %s", mode, augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        """Arguments from ``INPUT.*`` (augmentations, FORMAT, MASK_FORMAT, CROP),
        ``MODEL.MASK_ON``, ``MODEL.KEYPOINT_ON`` and ``MODEL.LOAD_PROPOSALS`` /
        ``DATASETS.PRECOMPUTED_PROPOSAL_TOPK_{TRAIN,TEST}``."""
        crop = cfg.INPUT.CROP.ENABLED and is_train
        # A training crop runs before the resize/flip of build_augmentation; cropped masks
        # then define tighter boxes than the cropped boxes, hence recompute_boxes.
        leading = [T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)] if crop else []
        topk_key = "PRECOMPUTED_PROPOSAL_TOPK_" + ("TRAIN" if is_train else "TEST")
        kwargs = dict(
            is_train=is_train,
            augmentations=leading + utils.build_augmentation(cfg, is_train),
            image_format=cfg.INPUT.FORMAT,
            use_instance_mask=cfg.MODEL.MASK_ON,
            instance_mask_format=cfg.INPUT.MASK_FORMAT,
            use_keypoint=cfg.MODEL.KEYPOINT_ON,
            recompute_boxes=bool(crop and cfg.MODEL.MASK_ON),
        )
        if cfg.MODEL.LOAD_PROPOSALS:
            kwargs["precomputed_proposal_topk"] = cfg.DATASETS[topk_key]
        return kwargs

    def _augmented(self, record: Dict[str, Any]):
        """Read the record's image (and semantic map, if any) and augment them together.

        Returns:
            ``(image HxWxC ndarray, sem_seg HxW ndarray or None, the applied transforms)``.
        """
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        seg_file = record.pop("sem_seg_file_name", None)
        sem_seg = None if seg_file is None else utils.read_image(seg_file, "L")[:, :, 0]
        state = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(state)
        return state.image, state.sem_seg, transforms

    def _instances(self, annotations: List[Dict[str, Any]], transforms, image_hw):
        """The non-crowd annotations, transformed like the image, as ``Instances``
        (empty boxes/masks removed)."""
        dropped = () if self.use_instance_mask else ("segmentation",)
        dropped += () if self.use_keypoint else ("keypoints",)
        kept = []
        for annotation in annotations:
            if annotation.get("iscrowd", 0) != 0:
                continue
            for key in dropped:
                annotation.pop(key, None)
            kept.append(
                utils.transform_instance_annotations(
                    annotation,
                    transforms,
                    image_hw,
                    keypoint_hflip_indices=self.keypoint_hflip_indices,
                )
            )
        instances = utils.annotations_to_instances(
            kept, image_hw, mask_format=self.instance_mask_format
        )
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        return utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Map one dataset dict (see the class docstring); the input is not modified.

        Returns:
            A new dict with ``image`` ((C, H, W) uint8 tensor), the original keys, and
            ``instances`` (training) / ``proposals`` (when configured).
        """
        record = copy.deepcopy(dataset_dict)
        image, sem_seg, transforms = self._augmented(record)
        image_hw = image.shape[:2]
        record["image"] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        if sem_seg is not None:
            record["sem_seg"] = torch.from_numpy(sem_seg.astype(np.int64))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                record, image_hw, transforms, proposal_topk=self.proposal_topk
            )
        annotations = record.pop("annotations", None)
        if self.is_train and annotations is not None:
            record["instances"] = self._instances(annotations, transforms, image_hw)
        return record
