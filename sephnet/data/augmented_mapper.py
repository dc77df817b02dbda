"""The training mapper with the tricks survey's augmentations (``MODEL.SEPH.AUGMENT``).

:class:`AugmentedDatasetMapper` maps one dataset dict to a model input like detectron2's
``DatasetMapper`` in training, and in addition

1. applies :class:`~sephnet.data.photometric.PhotometricDistortion` to every sample
   after detectron2's augmentations (``INPUT.CROP``, resize, flip);
2. with probabilities ``MIXUP.PROB`` / ``CUTMIX.PROB`` / ``MOSAIC.PROB`` (exclusive),
   draws one or three more samples from the training set and mixes them with the item
   (:mod:`sephnet.data.mixing`);
3. applies :class:`~sephnet.data.occlusion.RandomErase` and
   :class:`~sephnet.data.occlusion.CutOut` to the final image.

Randomness: everything, the extra samples' dataset indices included, is drawn from
numpy's global RNG (which detectron2's loader seeds per worker and the core's resumable
loader per stream position) in a fixed order per item. So a seeded run is reproducible,
and the core's loader resumes it exactly (the extra samples are a function of the item's
stream position, not of the loader's history).
"""
import copy
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sephnet.backend import configurable
from sephnet.backend import detection_utils as utils
from sephnet.backend import transforms as T

from .mixing import Sample, cutmix, cutmix_rectangle, mixup, mosaic
from .occlusion import CutOut, RandomErase
from .photometric import PhotometricDistortion

__all__ = ["AugmentedDatasetMapper"]

logger = logging.getLogger(__name__)

_MIXES = ("mixup", "cutmix", "mosaic")


class AugmentedDatasetMapper:
    """Training mapper: detectron2's mapping plus photometric, mixing and occlusion
    augmentations (see the module docstring).

    ``__call__(dataset_dict)`` returns ``{**dataset_dict without annotations, "image":
    (C, H, W) uint8 tensor, "instances": Instances}`` with ``gt_boxes``, ``gt_classes``
    and, with masks, ``gt_masks``. Crowd annotations are dropped, as in training with
    detectron2's mapper.
    """

    @configurable
    def __init__(
        self,
        *,
        dataset: Sequence[Dict[str, Any]],
        augmentations: List[Any],
        final_augmentations: List[Any],
        image_format: str,
        use_instance_mask: bool,
        instance_mask_format: str = "polygon",
        recompute_boxes: bool = False,
        mix_probs: Tuple[float, float, float] = (0.0, 0.0, 0.0),
        mixup_alpha: float = 1.5,
        cutmix_alpha: float = 1.0,
        mosaic_center_range: Tuple[float, float] = (0.25, 0.75),
    ):
        """
        Args:
            dataset: the training dataset dicts (indexable), where extra samples come from.
            augmentations: per-sample augmentations (detectron2's, then photometric).
            final_augmentations: pixel-only augmentations of the final image.
            image_format: :func:`read_image` format.
            use_instance_mask: keep segmentations as ``gt_masks``.
            instance_mask_format: "polygon" or "bitmask".
            recompute_boxes: take the masks' tight boxes as ``gt_boxes`` even when no mix
                is applied (after ``INPUT.CROP``); mixed items always do with masks.
            mix_probs: probabilities of MixUp, CutMix, Mosaic (sum <= 1).
            mixup_alpha, cutmix_alpha: Beta parameters of the mixing weight.
            mosaic_center_range: range of the Mosaic centre, as fractions of the canvas.
        """
        if sum(mix_probs) > 1.0 + 1e-9:
            raise ValueError(f"mix_probs={mix_probs} sum to more than 1.")
        if len(dataset) == 0:
            raise ValueError("AugmentedDatasetMapper needs a non-empty training dataset.")
        self.dataset = dataset
        self.augmentations = T.AugmentationList(augmentations)
        self.final_augmentations = T.AugmentationList(final_augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.recompute_boxes = recompute_boxes
        self.mix_probs = tuple(float(p) for p in mix_probs)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mosaic_center_range = tuple(mosaic_center_range)
        logger.info(
            "[AugmentedDatasetMapper] per sample: %s; MixUp/CutMix/Mosaic probabilities %s; final: %s",
            augmentations, self.mix_probs, final_augmentations,
        )

    @classmethod
    def from_config(cls, cfg, dataset: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """Arguments from ``MODEL.SEPH.AUGMENT.*``, detectron2's ``INPUT.*`` training
        augmentations (``INPUT.CROP`` first, as detectron2's mapper does) and
        ``MODEL.MASK_ON``."""
        aug = cfg.MODEL.SEPH.AUGMENT
        augmentations = list(utils.build_augmentation(cfg, True))
        crop = bool(cfg.INPUT.CROP.ENABLED)
        if crop:
            augmentations.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        if aug.PHOTOMETRIC.PROB > 0:
            augmentations.append(
                PhotometricDistortion(
                    aug.PHOTOMETRIC.PROB,
                    brightness_delta=aug.PHOTOMETRIC.BRIGHTNESS_DELTA,
                    contrast_range=tuple(aug.PHOTOMETRIC.CONTRAST_RANGE),
                    saturation_range=tuple(aug.PHOTOMETRIC.SATURATION_RANGE),
                    hue_delta=aug.PHOTOMETRIC.HUE_DELTA,
                    image_format=cfg.INPUT.FORMAT,
                )
            )
        final = []
        if aug.RANDOM_ERASE.PROB > 0:
            final.append(
                RandomErase(
                    aug.RANDOM_ERASE.PROB,
                    area_range=tuple(aug.RANDOM_ERASE.AREA_RANGE),
                    aspect_range=tuple(aug.RANDOM_ERASE.ASPECT_RANGE),
                )
            )
        if aug.CUTOUT.PROB > 0:
            final.append(CutOut(aug.CUTOUT.PROB, num_holes=aug.CUTOUT.NUM_HOLES, size=aug.CUTOUT.SIZE))
        return dict(
            dataset=dataset,
            augmentations=augmentations,
            final_augmentations=final,
            image_format=cfg.INPUT.FORMAT,
            use_instance_mask=cfg.MODEL.MASK_ON,
            instance_mask_format=cfg.INPUT.MASK_FORMAT,
            recompute_boxes=bool(crop and cfg.MODEL.MASK_ON),
            mix_probs=(aug.MIXUP.PROB, aug.CUTMIX.PROB, aug.MOSAIC.PROB),
            mixup_alpha=aug.MIXUP.ALPHA,
            cutmix_alpha=aug.CUTMIX.ALPHA,
            mosaic_center_range=tuple(aug.MOSAIC.CENTER_RANGE),
        )

    # ------------------------------------------------------------------ samples
    def _load(self, record: Dict[str, Any], resize_to=None) -> Sample:
        """Read, augment and (optionally) resize one dataset dict into a :class:`Sample`.

        Args:
            resize_to: None, or a function ``(h, w) -> (new_h, new_w)`` applied after the
                augmentations (Mosaic's half size, CutMix's common size).
        """
        record = copy.deepcopy(record)
        if "sem_seg_file_name" in record:
            raise ValueError(
                f"{record.get('file_name')}: semantic segmentation ('sem_seg_file_name') is not "
                "transformed by MODEL.SEPH.AUGMENT mixes; turn them off for this dataset."
            )
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        state = T.AugInput(image)
        transforms = self.augmentations(state)
        image = state.image
        if resize_to is not None:
            h, w = image.shape[:2]
            resize = T.ResizeTransform(h, w, *resize_to(h, w))
            image = resize.apply_image(image)
            transforms = T.TransformList(list(transforms.transforms) + [resize])
        annotations = []
        for annotation in record.get("annotations", []):
            if annotation.get("iscrowd", 0) != 0:
                continue
            annotation.pop("keypoints", None)
            if not self.use_instance_mask:
                annotation.pop("segmentation", None)
            annotations.append(utils.transform_instance_annotations(annotation, transforms, image.shape[:2]))
        return Sample(image, annotations)

    def _extra(self, count: int) -> List[Dict[str, Any]]:
        return [self.dataset[int(i)] for i in np.random.randint(len(self.dataset), size=count)]

    def _choose_mix(self) -> Optional[str]:
        if not any(self.mix_probs):
            return None
        u = np.random.rand()
        for name, edge in zip(_MIXES, np.cumsum(self.mix_probs)):
            if u < edge:
                return name
        return None

    def _mixed_sample(self, record: Dict[str, Any], mix: Optional[str]) -> Sample:
        if mix is None:
            return self._load(record)
        if mix == "mixup":
            other = self._extra(1)[0]
            lam = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            return mixup(self._load(record), self._load(other), lam)
        if mix == "cutmix":
            other = self._extra(1)[0]
            lam = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            a = self._load(record)
            b = self._load(other, resize_to=lambda h, w: a.size)
            cx, cy = np.random.randint(a.size[1]), np.random.randint(a.size[0])
            return cutmix(a, b, cutmix_rectangle(a.size, lam, (cx, cy)))
        others = self._extra(3)
        fx, fy = np.random.uniform(*self.mosaic_center_range, size=2)
        half = lambda h, w: (max(int(round(h / 2)), 1), max(int(round(w / 2)), 1))  # noqa: E731
        samples = [self._load(r, resize_to=half) for r in [record] + others]
        canvas = (2 * samples[0].size[0], 2 * samples[0].size[1])
        return mosaic(samples, canvas, (int(fx * canvas[1]), int(fy * canvas[0])))

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Map one dataset dict (see the class docstring); the input is not modified."""
        mix = self._choose_mix()
        sample = self._mixed_sample(dataset_dict, mix)
        state = T.AugInput(sample.image)
        self.final_augmentations(state)
        image = state.image
        image_hw = image.shape[:2]
        record = {k: v for k, v in dataset_dict.items() if k != "annotations"}
        record["image"] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        instances = utils.annotations_to_instances(
            sample.annotations, image_hw, mask_format=self.instance_mask_format
        )
        if instances.has("gt_masks") and (mix is not None or self.recompute_boxes):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        record["instances"] = utils.filter_empty_instances(instances)
        return record
