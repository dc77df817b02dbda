"""Draw saved predictions beside the ground truth, image by image.

detectron2's ``tools/visualize_json_results.py``: reads the ``coco_instances_results.json`` that
``COCOEvaluator`` writes and draws, for every image of the dataset that has predictions above
the threshold or ground truth, the predictions (left) next to the annotations (right)::

    python -m sephnet.tools.visualize_json_results \\
        --input output/quickstart/inference/coco_instances_results.json \\
        --dataset shapes_val --output output/vis --conf-threshold 0.5

Category ids in the file are the dataset's own (as COCO json stores them) and are mapped to
the model's classes through the dataset's metadata; masks are drawn when the file has them.
"""
import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from sephnet.backend import (
    Boxes,
    BoxMode,
    DatasetCatalog,
    Instances,
    MetadataCatalog,
    detection_utils,
    import_module,
)

__all__ = ["predictions_by_image", "to_instances", "main"]


def predictions_by_image(path: str) -> Dict[int, List[Dict[str, Any]]]:
    """The detections of a results file grouped by ``image_id``.

    Raises:
        FileNotFoundError / ValueError: the file is missing, not JSON, or not a list of
            detections with image_id, category_id, bbox and score.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path!r} does not exist.")
    try:
        with open(path) as f:
            dets = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"--input {path!r} is not JSON ({e}).") from None
    grouped: Dict[int, List[Dict[str, Any]]] = defaultdict(list)
    for i, d in enumerate(dets if isinstance(dets, list) else [None]):
        if not isinstance(d, dict) or {"image_id", "category_id", "bbox", "score"} - set(d):
            raise ValueError(f"--input {path!r}: item {i} is not a detection with image_id, "
                             "category_id, bbox and score.")
        grouped[d["image_id"]].append(d)
    return grouped


def to_instances(dets: List[Dict[str, Any]], image_size, dataset_to_contiguous: Dict[int, int],
                 threshold: float) -> Instances:
    """``Instances`` (pred_boxes XYXY, scores, pred_classes, pred_masks when given) of the
    detections of one image scoring at least ``threshold``.

    Raises:
        ValueError: a detection's category id is not one of the dataset's.
    """
    dets = [d for d in dets if d["score"] >= threshold]
    unknown = {d["category_id"] for d in dets} - set(dataset_to_contiguous)
    if unknown:
        raise ValueError(f"Predictions use category ids {sorted(unknown)} that the dataset "
                         f"does not have (it has {sorted(dataset_to_contiguous)}).")
    result = Instances(image_size)
    boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
    result.pred_boxes = Boxes(torch.as_tensor(BoxMode.convert(boxes, BoxMode.XYWH_ABS,
                                                              BoxMode.XYXY_ABS)))
    result.scores = torch.tensor([d["score"] for d in dets], dtype=torch.float32)
    result.pred_classes = torch.tensor([dataset_to_contiguous[d["category_id"]] for d in dets],
                                       dtype=torch.int64)
    if dets and all("segmentation" in d for d in dets):
        masks = [mask_util.decode(d["segmentation"]) for d in dets]
        result.pred_masks = torch.as_tensor(np.stack(masks)).bool()
    return result


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.visualize_json_results",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="coco_instances_results.json")
    parser.add_argument("--dataset", required=True, help="registered dataset name")
    parser.add_argument("--output", required=True, help="folder for the drawings")
    parser.add_argument("--conf-threshold", type=float, default=0.5,
                        help="predictions drawn (default: score >= 0.5)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    import sephnet  # noqa: F401  (registers the built-in datasets)

    args = get_parser().parse_args(argv)
    Visualizer = import_module("utils.visualizer").Visualizer
    try:
        predictions = predictions_by_image(args.input)
        dicts = DatasetCatalog.get(args.dataset)
        metadata = MetadataCatalog.get(args.dataset)
        mapping = metadata.get("thing_dataset_id_to_contiguous_id", None) or {
            i: i for i in range(len(metadata.get("thing_classes", [])))}
        os.makedirs(args.output, exist_ok=True)
        written = 0
        for dic in dicts:
            dets = predictions.get(dic["image_id"], [])
            image = detection_utils.read_image(dic["file_name"], format="RGB")
            instances = to_instances(dets, image.shape[:2], mapping, args.conf_threshold)
            if len(instances) == 0 and not dic.get("annotations"):
                continue
            left = Visualizer(image, metadata).draw_instance_predictions(instances).get_image()
            right = Visualizer(image, metadata).draw_dataset_dict(dic).get_image()
            name = os.path.splitext(os.path.basename(dic["file_name"]))[0]
            cv2.imwrite(os.path.join(args.output, f"{name}.png"),
                        np.concatenate([left, right], axis=1)[:, :, ::-1])
            written += 1
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"visualize_json_results: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {written} images (predictions | ground truth) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
