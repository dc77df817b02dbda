"""Test-time augmentation for R-CNN models (``detectron2.modeling.test_time_augmentation``).

``DatasetMapperTTA`` turns one test input into several views (every short-edge size of
``TEST.AUG.MIN_SIZES`` capped at ``TEST.AUG.MAX_SIZE``, each also mirrored when
``TEST.AUG.FLIP``); ``GeneralizedRCNNWithTTA`` runs a ``GeneralizedRCNN`` on all views::

    views --model, masks off--> boxes per view --inverse transform--> boxes in the image
          --union, per-class NMS (MODEL.ROI_HEADS.NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE)-->
          merged boxes --into every view--> model.inference(given boxes) --> mask probabilities
          --un-mirror, mean over views--> pasted into the image (masks only with MODEL.MASK_ON)
"""
import copy
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sephnet.d2.config import configurable
from sephnet.d2.data.detection_utils import read_image
from sephnet.d2.data.transforms import (
    HFlipTransform,
    NoOpTransform,
    RandomFlip,
    ResizeShortestEdge,
    ResizeTransform,
    TransformList,
    apply_augmentations,
)
from sephnet.d2.structures import Boxes, Instances

from .meta_arch import GeneralizedRCNN
from .postprocessing import detector_postprocess
from .roi_heads.fast_rcnn import fast_rcnn_inference_single_image

__all__ = ["DatasetMapperTTA", "GeneralizedRCNNWithTTA"]


class UnsupportedTTAModel(ValueError, AssertionError):
    """The model or config cannot be used with TTA (an ``AssertionError`` in detectron2)."""


class DatasetMapperTTA:
    """Map one test dict (with a CHW uint8 ``"image"``) to its augmented views.

    The views are, for each size of ``min_sizes`` in order: the image resized so its short
    edge is that size (long edge at most ``max_size``), then, with ``flip``, the same
    mirrored left-right. Each view's ``"transforms"`` maps coordinates of the *original*
    image (``height`` x ``width``) into the view, i.e. it includes the resize from the
    original size to the given ``"image"`` size when they differ.
    """

    @configurable
    def __init__(self, min_sizes: Sequence[int], max_size: int, flip: bool):
        """
        Args:
            min_sizes: short-edge sizes of the views, in pixels.
            max_size: upper bound of a view's long edge, in pixels.
            flip: also add a left-right mirrored view of every size.
        """
        self.min_sizes = min_sizes
        self.max_size = max_size
        self.flip = flip

    @classmethod
    def from_config(cls, cfg):
        aug = cfg.TEST.AUG
        return {"min_sizes": aug.MIN_SIZES, "max_size": aug.MAX_SIZE, "flip": aug.FLIP}

    def _view_augmentations(self) -> Iterator[list]:
        for size in self.min_sizes:
            resize = ResizeShortestEdge(size, self.max_size)
            yield [resize]
            if self.flip:
                yield [resize, RandomFlip(prob=1.0)]

    def __call__(self, dataset_dict: Dict) -> List[Dict]:
        """
        Args:
            dataset_dict: a model input dict: ``"image"`` (uint8 tensor ``[C, H, W]``),
                ``"height"``, ``"width"`` (the original image size) and any other fields.

        Returns:
            ``len(min_sizes) * (2 if flip else 1)`` deep copies of ``dataset_dict``, each
            with its view as ``"image"`` and a ``TransformList`` as ``"transforms"``.
        """
        hwc = dataset_dict["image"].permute(1, 2, 0).numpy()
        given_hw = hwc.shape[:2]
        original_hw = (dataset_dict["height"], dataset_dict["width"])
        to_given = (
            NoOpTransform()
            if tuple(given_hw) == tuple(original_hw)
            else ResizeTransform(original_hw[0], original_hw[1], given_hw[0], given_hw[1])
        )
        views = []
        for augs in self._view_augmentations():
            view_image, tfms = apply_augmentations(augs, hwc.copy())
            view = copy.deepcopy(dataset_dict)
            view["image"] = torch.from_numpy(np.ascontiguousarray(view_image.transpose(2, 0, 1)))
            view["transforms"] = to_given + tfms
            views.append(view)
        return views


class GeneralizedRCNNWithTTA(nn.Module):
    """A ``GeneralizedRCNN`` evaluated on test-time augmented views (see the module docstring).

    Calling it takes and returns what ``GeneralizedRCNN.forward`` does at inference: N
    input dicts in, N ``{"instances": Instances}`` out, in the original image coordinates
    (``pred_boxes``, ``scores``, ``pred_classes``; ``pred_masks`` bool ``[R, H, W]`` with
    ``MODEL.MASK_ON``). Inputs without ``"image"`` are read from ``"file_name"`` in the
    model's input format.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 3):
        """
        Args:
            cfg: the model's config (cloned; reads MODEL.ROI_HEADS.NUM_CLASSES /
                NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE, MODEL.MASK_ON and, without
                ``tta_mapper``, TEST.AUG.*).
            model: a ``GeneralizedRCNN`` (a ``DistributedDataParallel`` is unwrapped).
            tta_mapper: callable mapping an input dict to its views (each with a
                ``"transforms"`` entry); default ``DatasetMapperTTA(cfg)``.
            batch_size: views per forward pass.

        Raises:
            UnsupportedTTAModel: ``model`` is not a ``GeneralizedRCNN``, or the config turns
                on keypoints or precomputed proposals.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, GeneralizedRCNN):
            raise UnsupportedTTAModel(
                f"test-time augmentation needs a GeneralizedRCNN; got {type(model).__name__}."
            )
        self.cfg = cfg.clone()
        if self.cfg.MODEL.KEYPOINT_ON:
            raise UnsupportedTTAModel("test-time augmentation does not support MODEL.KEYPOINT_ON.")
        if self.cfg.MODEL.LOAD_PROPOSALS:
            raise UnsupportedTTAModel(
                "test-time augmentation does not support MODEL.LOAD_PROPOSALS (precomputed "
                "proposals)."
            )
        self.model = model
        self.tta_mapper = DatasetMapperTTA(cfg) if tta_mapper is None else tta_mapper
        self.batch_size = batch_size

    @contextmanager
    def _turn_off_roi_heads(self, attrs: Sequence[str]):
        """Set the ROI heads' boolean ``attrs`` that exist (e.g. ``mask_on``) to False
        inside the block, and restore them after."""
        heads = self.model.roi_heads
        saved = {a: getattr(heads, a) for a in attrs if hasattr(heads, a)}
        for name in saved:
            setattr(heads, name, False)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(heads, name, value)

    def _batch_inference(
        self, batched_inputs: List[Dict], detected_instances: Optional[List[Instances]] = None
    ) -> List[Instances]:
        """``model.inference(..., do_postprocess=False)`` over ``batch_size`` chunks: raw
        Instances in each view's coordinates, one per input."""
        outputs = []
        for start in range(0, len(batched_inputs), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            given = None if detected_instances is None else detected_instances[chunk]
            outputs.extend(
                self.model.inference(batched_inputs[chunk], given, do_postprocess=False)
            )
        return outputs

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [self._inference_one_image(self._with_image(x)) for x in batched_inputs]

    def _with_image(self, dataset_dict: Dict) -> Dict:
        out = copy.copy(dataset_dict)
        if "image" not in out:
            hwc = read_image(out.pop("file_name"), self.model.input_format)
            out["image"] = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
        if "height" not in out and "width" not in out:
            out["height"], out["width"] = out["image"].shape[1:3]
        return out

    def _inference_one_image(self, inputs: Dict) -> Dict[str, Instances]:
        image_hw = (inputs["height"], inputs["width"])
        views = self.tta_mapper(inputs)
        tfms = [v.pop("transforms") for v in views]
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]):
            boxes, scores, classes = self._get_augmented_boxes(views, tfms)
        merged = self._merge_detections(boxes, scores, classes, image_hw)
        if not self.cfg.MODEL.MASK_ON:
            return {"instances": merged}
        given = self._rescale_detected_boxes(views, merged, tfms)
        outputs = self._batch_inference(views, given)
        del views, given
        merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        return {"instances": detector_postprocess(merged, *image_hw)}

    def _get_augmented_boxes(
        self, views: List[Dict], tfms: List[TransformList]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detect on every view and map the boxes back: ``[D, 4]`` boxes in the original
        image, ``[D]`` scores, ``[D]`` classes (D = detections of all views)."""
        boxes, scores, classes = [], [], []
        for out, tfm in zip(self._batch_inference(views), tfms):
            view_boxes = out.pred_boxes.tensor
            back = tfm.inverse().apply_box(view_boxes.cpu().numpy())
            boxes.append(torch.as_tensor(back, dtype=view_boxes.dtype, device=view_boxes.device))
            scores.append(out.scores)
            classes.append(out.pred_classes)
        return torch.cat(boxes), torch.cat(scores), torch.cat(classes)

    def _merge_detections(
        self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, image_hw
    ) -> Instances:
        """Per-class NMS over the union, as ``fast_rcnn_inference`` with a score threshold
        of 1e-8 on a ``[D, K+1]`` score matrix holding each detection's score in its class."""
        num_classes = self.cfg.MODEL.ROI_HEADS.NUM_CLASSES
        score_matrix = boxes.new_zeros(len(boxes), num_classes + 1)
        score_matrix[torch.arange(len(boxes), device=boxes.device), classes] = scores.to(
            score_matrix.dtype
        )
        merged, _ = fast_rcnn_inference_single_image(
            boxes,
            score_matrix,
            image_hw,
            1e-8,
            self.cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            self.cfg.TEST.DETECTIONS_PER_IMAGE,
        )
        return merged

    def _rescale_detected_boxes(
        self, views: List[Dict], merged: Instances, tfms: List[TransformList]
    ) -> List[Instances]:
        """The merged detections expressed in each view's coordinates."""
        boxes = merged.pred_boxes.tensor.cpu().numpy()
        given = []
        for view, tfm in zip(views, tfms):
            view_boxes = torch.from_numpy(tfm.apply_box(boxes))
            given.append(
                Instances(
                    tuple(view["image"].shape[1:3]),
                    pred_boxes=Boxes(view_boxes),
                    pred_classes=merged.pred_classes,
                    scores=merged.scores,
                )
            )
        return given

    @staticmethod
    def _reduce_pred_masks(outputs: List[Instances], tfms: List[TransformList]) -> torch.Tensor:
        """Mean over views of the ``[R, 1, M, M]`` mask probabilities, mirrored back first
        for mirrored views (masks are box-relative, so resizes need no inverse)."""
        masks = []
        for out, tfm in zip(outputs, tfms):
            mirrored = any(isinstance(t, HFlipTransform) for t in tfm.transforms)
            masks.append(out.pred_masks.flip(dims=[3]) if mirrored else out.pred_masks)
        return torch.stack(masks).mean(dim=0)
