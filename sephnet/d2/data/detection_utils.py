"""Per-image data utilities of the detection data path (detectron2.data.detection_utils).

Conventions: images are HWC numpy arrays (uint8 0-255 for PIL modes and "BGR"; float
for "YUV-BT.601"); ``image_size``/``image_shape`` is ``(height, width)``; annotation
dicts follow detectron2's dataset format (``bbox`` + ``bbox_mode``, ``category_id``,
``segmentation`` as polygons ``list[list[float]]`` or COCO RLE ``dict``, ``iscrowd``).
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, UnidentifiedImageError

from sephnet.d2.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    PolygonMasks,
    polygons_to_bitmask,
)
from sephnet.d2.utils.file_io import PathManager

from . import transforms as T
from .catalog import MetadataCatalog

__all__ = [
    "SizeMismatchError",
    "UnreadableImageError",
    "CropGeometryError",
    "convert_image_to_rgb",
    "check_image_size",
    "transform_proposals",
    "transform_instance_annotations",
    "annotations_to_instances",
    "build_augmentation",
    "build_transform_gen",
    "filter_empty_instances",
    "gen_crop_transform_with_instance",
    "read_image",
    "check_metadata_consistency",
    "convert_PIL_to_numpy",
]

logger = logging.getLogger(__name__)


class SizeMismatchError(ValueError):
    """The image read from disk does not have the width/height its dataset dict says."""


class UnreadableImageError(OSError, ValueError):
    """An image file exists but cannot be decoded.

    An ``OSError`` like PIL's own error (what detectron2 raises here) and a
    ``ValueError`` (the house convention for bad user data).
    """


# BT.601 colour matrices (rows: output channel; columns: input channel).
_M_RGB2YUV = [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
_M_YUV2RGB = [[1.0, 0.0, 1.13983], [1.0, -0.39465, -0.58060], [1.0, 2.03211, 0.0]]

_EXIF_ORIENTATION_TAG = 274
# EXIF orientation value -> the PIL transpose that undoes it.
_EXIF_TRANSPOSE = {
    2: Image.FLIP_LEFT_RIGHT,
    3: Image.ROTATE_180,
    4: Image.FLIP_TOP_BOTTOM,
    5: Image.TRANSPOSE,
    6: Image.ROTATE_270,
    7: Image.TRANSVERSE,
    8: Image.ROTATE_90,
}


def convert_PIL_to_numpy(image: Image.Image, format: Optional[str]) -> np.ndarray:
    """Convert a PIL image to an HWC numpy array in ``format`` (see :func:`read_image`)."""
    if format is not None:
        image = image.convert("RGB" if format in ("BGR", "YUV-BT.601") else format)
    array = np.asarray(image)
    if format == "L":
        return array[:, :, None]
    if format == "BGR":
        return array[:, :, ::-1]
    if format == "YUV-BT.601":
        return np.dot(array / 255.0, np.array(_M_RGB2YUV).T)
    return array


def convert_image_to_rgb(image: Union[np.ndarray, torch.Tensor], format: str) -> np.ndarray:
    """Convert an HWC image in ``format`` to an ``(H, W, 3)`` RGB array in [0, 255].

    The result is float for "YUV-BT.601" input, uint8 otherwise.
    """
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if format == "BGR":
        return image[:, :, [2, 1, 0]]
    if format == "YUV-BT.601":
        return np.dot(image, np.array(_M_YUV2RGB).T) * 255.0
    if format == "L":
        image = image[:, :, 0]
    image = image.astype(np.uint8)
    return np.asarray(Image.fromarray(image, mode=format).convert("RGB"))


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip ``image`` as its EXIF orientation tag says (unchanged without one)."""
    try:
        exif = image.getexif()
    except Exception:  # broken EXIF blocks raise many exception types in PIL
        return image
    method = _EXIF_TRANSPOSE.get(exif.get(_EXIF_ORIENTATION_TAG)) if exif else None
    return image.transpose(method) if method is not None else image


def read_image(file_name: str, format: Optional[str] = None) -> np.ndarray:
    """Read an image file into an HWC numpy array, applying its EXIF orientation.

    Args:
        file_name: path (anything PathManager can open).
        format: a PIL mode (e.g. "RGB", "L"), "BGR" or "YUV-BT.601"; None keeps the
            file's own mode.

    Returns:
        ``(H, W, C)`` array (``(H, W)`` for single-channel files read with
        ``format=None``): uint8 in [0, 255] for PIL modes and "BGR", float64 for
        "YUV-BT.601" (Y in [0, 1]).

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        UnreadableImageError: the file is not a readable image (the message names it).
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image = _apply_exif_orientation(image)
            return convert_PIL_to_numpy(image, format)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"Image file '{file_name}' does not exist.") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UnreadableImageError(f"Cannot read image file '{file_name}': {e}") from e


def check_image_size(dataset_dict: Dict[str, Any], image: np.ndarray) -> None:
    """Check ``image`` (HWC) against the dict's "width"/"height"; fill them in if absent.

    Raises:
        SizeMismatchError: the sizes differ; the message names the file and both sizes.
    """
    if "width" in dataset_dict or "height" in dataset_dict:
        image_wh = (image.shape[1], image.shape[0])
        expected_wh = (dataset_dict.get("width"), dataset_dict.get("height"))
        if image_wh != expected_wh:
            where = f" for image {dataset_dict['file_name']}" if "file_name" in dataset_dict else ""
            raise SizeMismatchError(
                f"Mismatched image shape{where}, got (width, height)={image_wh}, expect "
                f"{expected_wh}. Please check the width/height in your annotation."
            )
    dataset_dict.setdefault("width", image.shape[1])
    dataset_dict.setdefault("height", image.shape[0])


def transform_proposals(
    dataset_dict: Dict[str, Any],
    image_shape: Tuple[int, int],
    transforms: T.TransformList,
    *,
    proposal_topk: int,
    min_box_size: float = 0,
) -> None:
    """Move precomputed proposals into ``dataset_dict["proposals"]`` (an Instances).

    Pops "proposal_boxes" (R, 4), "proposal_objectness_logits" (R,) and
    "proposal_bbox_mode"; boxes are transformed, clipped to ``image_shape``, those with
    a side < ``min_box_size`` dropped, and the first ``proposal_topk`` kept (the inputs
    are assumed sorted by score). Fields: ``proposal_boxes`` (Boxes),
    ``objectness_logits`` (float32). Does nothing when there are no proposals.
    """
    if "proposal_boxes" not in dataset_dict:
        return
    boxes = BoxMode.convert(
        dataset_dict.pop("proposal_boxes"),
        dataset_dict.pop("proposal_bbox_mode"),
        BoxMode.XYXY_ABS,
    )
    boxes = Boxes(transforms.apply_box(boxes))
    logits = torch.as_tensor(dataset_dict.pop("proposal_objectness_logits").astype("float32"))
    boxes.clip(image_shape)
    keep = boxes.nonempty(threshold=min_box_size)
    proposals = Instances(image_shape)
    proposals.proposal_boxes = boxes[keep][:proposal_topk]
    proposals.objectness_logits = logits[keep][:proposal_topk]
    dataset_dict["proposals"] = proposals


def transform_instance_annotations(
    annotation: Dict[str, Any],
    transforms: Union[T.TransformList, Sequence[T.Transform]],
    image_size: Tuple[int, int],
    *,
    keypoint_hflip_indices: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Apply ``transforms`` to one instance annotation, in place.

    * ``bbox`` becomes a float XYXY_ABS array of 4, transformed with ``apply_box`` and
      clipped to ``[0, W] x [0, H]`` of ``image_size``; ``bbox_mode`` becomes XYXY_ABS.
    * polygon ``segmentation`` (list of flat XY lists) -> list of transformed flat
      arrays (``apply_polygons``).
    * RLE ``segmentation`` (dict) -> decoded, transformed with ``apply_segmentation``,
      stored as an ``(H, W)`` uint8 array.

    Args:
        annotation: one instance in detectron2's dataset format.
        transforms: what was applied to the image.
        image_size: ``(H, W)`` of the transformed image.
        keypoint_hflip_indices: accepted for API compatibility; keypoints are not
            supported by the portable core.

    Raises:
        ValueError: the annotation has keypoints, or a segmentation of unknown type.
    """
    if isinstance(transforms, (tuple, list)):
        transforms = T.TransformList(transforms)
    bbox = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.array([bbox]))[0].clip(min=0)
    h, w = image_size
    annotation["bbox"] = np.minimum(bbox, [w, h, w, h])
    annotation["bbox_mode"] = BoxMode.XYXY_ABS

    if "segmentation" in annotation:
        segm = annotation["segmentation"]
        if isinstance(segm, list):
            polygons = [np.asarray(p).reshape(-1, 2) for p in segm]
            annotation["segmentation"] = [
                p.reshape(-1) for p in transforms.apply_polygons(polygons)
            ]
        elif isinstance(segm, dict):
            mask = transforms.apply_segmentation(mask_util.decode(segm))
            if tuple(mask.shape[:2]) != tuple(image_size):
                raise ValueError(
                    f"Transformed RLE mask has shape {mask.shape[:2]}, but the transformed "
                    f"image has size {tuple(image_size)}; the RLE 'size' must match the image."
                )
            annotation["segmentation"] = mask
        else:
            raise ValueError(
                f"Cannot transform segmentation of type '{type(segm).__name__}'! Supported "
                "types are: polygons as list[list[float] or ndarray], COCO-style RLE as a dict."
            )

    if "keypoints" in annotation:
        raise ValueError(
            "The annotation has 'keypoints', which sephnet's portable core does not support; "
            "drop them (DatasetMapper(use_keypoint=False) does) or use real detectron2."
        )
    return annotation


def annotations_to_instances(
    annos: List[Dict[str, Any]], image_size: Tuple[int, int], mask_format: str = "polygon"
) -> Instances:
    """Build the ground-truth :class:`Instances` the models consume.

    Args:
        annos: instance annotations of one image (any ``bbox_mode``).
        image_size: ``(H, W)``.
        mask_format: "polygon" (-> PolygonMasks) or "bitmask" (-> BitMasks ``(N, H, W)``
            bool); used only when the annotations have "segmentation".

    Returns:
        Instances with ``gt_boxes`` (Boxes, (N, 4) float32 XYXY_ABS, not clipped here),
        ``gt_classes`` ((N,) int64) and, if present, ``gt_masks``.

    Raises:
        ValueError: unknown ``mask_format`` or unsupported segmentation types.
    """
    if annos:
        boxes = np.stack(
            [BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS) for obj in annos]
        )
    else:
        boxes = np.zeros((0, 4))
    target = Instances(image_size)
    target.gt_boxes = Boxes(boxes)
    target.gt_classes = torch.tensor([int(obj["category_id"]) for obj in annos], dtype=torch.int64)

    if annos and "segmentation" in annos[0]:
        segms = [obj["segmentation"] for obj in annos]
        if mask_format == "polygon":
            try:
                target.gt_masks = PolygonMasks(segms)
            except ValueError as e:
                raise ValueError(
                    "Annotations cannot be read as polygons (mask_format='polygon'); use 'bitmask' for RLE masks."
                ) from e
        elif mask_format == "bitmask":
            masks = [_segmentation_to_bitmask(s, image_size) for s in segms]
            target.gt_masks = BitMasks(
                torch.stack([torch.from_numpy(np.ascontiguousarray(m)) for m in masks])
            )
        else:
            raise ValueError(
                f"mask_format must be 'polygon' or 'bitmask'; got {mask_format!r}."
            )

    if annos and "keypoints" in annos[0]:
        raise ValueError(
            "The annotations have 'keypoints', which sephnet's portable core does not support."
        )
    return target


def _segmentation_to_bitmask(segm: Any, image_size: Tuple[int, int]) -> np.ndarray:
    """One segmentation (polygons, RLE dict or (H, W) array) as an (H, W) mask array."""
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, *image_size)
    if isinstance(segm, dict):
        return mask_util.decode(segm)
    if isinstance(segm, np.ndarray):
        if segm.ndim != 2:
            raise ValueError(f"Expect a segmentation mask of 2 dimensions; got {segm.ndim}.")
        return segm
    raise ValueError(
        f"Cannot convert segmentation of type '{type(segm).__name__}' to BitMasks! Supported "
        "types are: polygons as list[list[float] or ndarray], COCO-style RLE as a dict, or "
        "a binary segmentation mask in a 2D numpy array of shape HxW."
    )


def filter_empty_instances(
    instances: Instances,
    by_box: bool = True,
    by_mask: bool = True,
    box_threshold: float = 1e-5,
    return_mask: bool = False,
):
    """Drop instances whose box or mask is empty.

    Args:
        instances: with ``gt_boxes`` and optionally ``gt_masks``.
        by_box: drop boxes with width or height <= ``box_threshold``.
        by_mask: drop instances whose ``gt_masks`` is empty (if present).
        return_mask: also return the (N,) bool keep mask.

    Returns:
        The kept Instances, and the keep mask when ``return_mask``.
    """
    if not (by_box or by_mask):
        raise ValueError("filter_empty_instances needs by_box=True or by_mask=True.")
    keeps = []
    if by_box:
        keeps.append(instances.gt_boxes.nonempty(threshold=box_threshold))
    if by_mask and instances.has("gt_masks"):
        keeps.append(instances.gt_masks.nonempty())
    if not keeps:
        return instances
    keep = keeps[0]
    for k in keeps[1:]:
        keep = keep & k
    if return_mask:
        return instances[keep], keep
    return instances[keep]


class CropGeometryError(AssertionError, ValueError):
    """A crop cannot be placed as asked (e.g. larger than the image).

    An ``AssertionError`` as in detectron2 and a ``ValueError`` (house convention).
    """


def gen_crop_transform_with_instance(
    crop_size: Sequence[int], image_size: Sequence[int], instance: Dict[str, Any]
) -> T.CropTransform:
    """A random ``crop_size`` window of the image that contains the centre of ``instance``'s box.

    The window's top-left corner ``(x0, y0)`` is drawn uniformly among the integer
    positions that keep the window inside the image and the box centre inside (or on
    the border of) the window: per axis, from ``max(floor(c) - crop, 0)`` to
    ``min(max(size - crop, 0), ceil(c))``, ``y0`` first.

    Args:
        crop_size: ``(h, w)`` of the window in pixels.
        image_size: ``(H, W)`` of the image.
        instance: one annotation in detectron2's dataset format (``bbox``, ``bbox_mode``).

    Returns:
        ``CropTransform(x0, y0, w, h)``.

    Raises:
        CropGeometryError: the box centre lies outside the image, or the window is
            larger than the image.
    """
    crop_hw = np.asarray(crop_size, dtype=np.int32)
    image_hw = np.asarray(image_size, dtype=np.int32)
    x0, y0, x1, y1 = BoxMode.convert(instance["bbox"], instance["bbox_mode"], BoxMode.XYXY_ABS)
    center = np.array([(y0 + y1) * 0.5, (x0 + x1) * 0.5])
    if (center > image_hw).any():
        raise CropGeometryError(
            f"The instance's box centre (y, x)={tuple(center)} lies outside the image of "
            f"size (h, w)={tuple(image_size)}."
        )
    if (crop_hw > image_hw).any():
        raise CropGeometryError(
            f"Crop size (h, w)={tuple(crop_size)} is larger than the image size {tuple(image_size)}."
        )
    low = np.maximum(np.floor(center).astype(np.int32) - crop_hw, 0)
    high = np.minimum(np.maximum(image_hw - crop_hw, 0), np.ceil(center).astype(np.int32))
    top = np.random.randint(low[0], high[0] + 1)
    left = np.random.randint(low[1], high[1] + 1)
    return T.CropTransform(left, top, crop_hw[1], crop_hw[0])


def check_metadata_consistency(key: str, dataset_names: Sequence[str]) -> None:
    """Check that all datasets have the same metadata value for ``key``.

    Raises:
        AttributeError: a dataset has no ``key`` in its metadata.
        ValueError: the values differ (the message names the datasets and key).
    """
    if len(dataset_names) == 0:
        return
    values = [getattr(MetadataCatalog.get(name), key) for name in dataset_names]
    for name, value in zip(dataset_names, values):
        if value != values[0]:
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, name, value)
            logger.error(
                "Metadata '%s' for dataset '%s' is '%s'", key, dataset_names[0], values[0]
            )
            raise ValueError(
                f"Datasets have different metadata '{key}': '{dataset_names[0]}' has "
                f"{values[0]!r} but '{name}' has {value!r}."
            )


def build_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """Default augmentations from the config: ResizeShortestEdge (+ RandomFlip in training).

    Training reads ``INPUT.MIN_SIZE_TRAIN``, ``INPUT.MAX_SIZE_TRAIN``,
    ``INPUT.MIN_SIZE_TRAIN_SAMPLING`` and ``INPUT.RANDOM_FLIP`` ("none", "horizontal",
    "vertical"); testing reads ``INPUT.MIN_SIZE_TEST``/``INPUT.MAX_SIZE_TEST`` with
    "choice" sampling and never flips.
    """
    if is_train:
        min_size, max_size = cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN
        sample_style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size, max_size, sample_style = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice"
    augmentation: List[T.Augmentation] = [T.ResizeShortestEdge(min_size, max_size, sample_style)]
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "vertical"):
            raise ValueError(
                "INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical'; "
                f"got {cfg.INPUT.RANDOM_FLIP!r}."
            )
        augmentation.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augmentation


build_transform_gen = build_augmentation
"""Old name of :func:`build_augmentation`."""
