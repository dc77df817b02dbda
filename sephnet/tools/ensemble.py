"""Evaluate an ensemble of detectors, or fuse saved predictions, with COCO AP.

Usage::

    # models: every member (optionally with test-time augmentation) on every image, fused
    python -m sephnet.tools.ensemble --model cfgA.yaml A.pth --model cfgB.yaml B.pth \\
        [--tta] [--fusion nms|voting|wbf] --dataset shapes_val --output output/ensemble

    # saved predictions: fuse coco_instances_results.json files of the same dataset
    python -m sephnet.tools.ensemble --results runA/inference/coco_instances_results.json \\
        runB/inference/coco_instances_results.json --fusion wbf --dataset shapes_val \\
        --output output/ensemble_json

Models, per image::

    each member m, each view v of m (the test resize, or TEST.AUG.* views with --tta):
        detections of m on v (masks off) --inverse transform--> boxes in the image
    all (m, v) detections --DetectionNMS.select: "nms" (per-class NMS, IoU --nms-thresh),
        "voting" (NMS + box voting), "wbf" (weighted boxes fusion over the m x v sources)-->
        fused boxes (at most TEST.DETECTIONS_PER_IMAGE)
    masks (when every member has MODEL.MASK_ON): each (m, v) predicts masks on the fused
        boxes; their probabilities are averaged (mirrored views un-mirrored) and pasted

An ensemble of one model with itself gives that model's detections (each duplicate cluster
fuses back to the box), and a single member with ``--tta`` and ``--fusion nms`` is
detectron2's ``GeneralizedRCNNWithTTA``. Images are processed one at a time and fed to the
backend's ``COCOEvaluator`` (which keeps masks RLE-encoded), so memory stays flat; a tqdm
bar shows progress and ETA.

Saved predictions: the detections of all files are fused per image and category with the
same rule (masks: each fused detection keeps the segmentation of its cluster's
highest-scoring detection) and evaluated with pycocotools against the dataset's json.

Both modes write ``OUTPUT/coco_instances_results.json`` and append the results (``bbox/AP``,
``segm/AP``, ...) as one line of ``OUTPUT/metrics.json``.
"""
import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from sephnet.backend import (
    Boxes,
    COCOEvaluator,
    DatasetCatalog,
    DatasetMapperTTA,
    DetectionCheckpointer,
    Instances,
    MetadataCatalog,
    build_model,
    detector_postprocess,
    get_cfg,
    import_module,
)
from sephnet.config import add_sephnet_config, validate_sephnet_config
from sephnet.engine.fast_inference import fast_inference_model
from sephnet.modeling.postprocessing import DetectionNMS

__all__ = ["EnsembleMember", "member_views", "load_member", "ensemble_predict",
           "evaluate_members", "fuse_results", "coco_evaluate", "fuse_result_files", "main"]

logger = logging.getLogger("sephnet.tools.ensemble")

_FUSIONS = ("nms", "voting", "wbf")
_COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class EnsembleMember:
    """One model of the ensemble with the views it sees.

    Attributes:
        model: a detector with ``inference(inputs, detected_instances, do_postprocess)``
            (a ``GeneralizedRCNN``), in eval mode.
        mapper: maps an input dict to its views, each with ``"transforms"`` from the
            original image (a ``DatasetMapperTTA``).
        input_format: the image format the model reads (``INPUT.FORMAT``).
        mask_on: whether the model predicts masks.
    """

    def __init__(self, model, mapper, input_format: str, mask_on: bool):
        self.model = model
        self.mapper = mapper
        self.input_format = input_format
        self.mask_on = mask_on


def member_views(cfg, tta: bool) -> DatasetMapperTTA:
    """The views of a member: its ``TEST.AUG.*`` views with ``tta``, else its test resize
    (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) alone."""
    if tta:
        return DatasetMapperTTA(cfg)
    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        raise ValueError(
            f"INPUT.MIN_SIZE_TEST={cfg.INPUT.MIN_SIZE_TEST}: the ensemble needs a test resize "
            "(a short-edge size > 0)."
        )
    return DatasetMapperTTA(
        min_sizes=[cfg.INPUT.MIN_SIZE_TEST], max_size=cfg.INPUT.MAX_SIZE_TEST, flip=False
    )


def load_member(config_file: str, weights: str, tta: bool = False, opts: Sequence[str] = ()):
    """Build a member from a config file and weights (sephnet keys added and validated).

    Returns:
        ``(EnsembleMember, cfg)``.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--model config file {config_file!r} does not exist.")
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.WEIGHTS = weights
    validate_sephnet_config(cfg)
    if cfg.MODEL.SEPH.FAST_INFERENCE.BF16:
        raise ValueError(f"{config_file}: MODEL.SEPH.FAST_INFERENCE.BF16 is not supported by "
                         "the ensemble (it calls the members' inference() directly); drop it.")
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model = fast_inference_model(cfg, model.eval())
    member = EnsembleMember(model, member_views(cfg, tta), cfg.INPUT.FORMAT, cfg.MODEL.MASK_ON)
    return member, cfg


def _mirrored(tfm) -> bool:
    flip = import_module("data.transforms").HFlipTransform
    return any(isinstance(t, flip) for t in tfm.transforms)


def _masks_off(model):
    heads = getattr(model, "roi_heads", None)
    if heads is None or not hasattr(heads, "mask_on"):
        return None
    saved, heads.mask_on = heads.mask_on, False
    return saved


def _view_detections(member: EnsembleMember, views, tfms):
    """Boxes (in the original image), scores and classes of one member on its views."""
    saved = _masks_off(member.model)
    try:
        outputs = member.model.inference(views, None, do_postprocess=False)
    finally:
        if saved is not None:
            member.model.roi_heads.mask_on = saved
    for out, tfm in zip(outputs, tfms):
        boxes = out.pred_boxes.tensor
        back = torch.as_tensor(tfm.inverse().apply_box(boxes.cpu().numpy()), dtype=boxes.dtype)
        yield back, out.scores.cpu(), out.pred_classes.cpu()


def _view_masks(member: EnsembleMember, views, tfms, fused: Instances) -> List[torch.Tensor]:
    """The member's ``[R, 1, M, M]`` mask probabilities for the fused boxes, per view."""
    boxes = fused.pred_boxes.tensor.numpy()
    given = [
        Instances(
            tuple(v["image"].shape[1:3]),
            pred_boxes=Boxes(torch.as_tensor(t.apply_box(boxes), dtype=torch.float32)),
            pred_classes=fused.pred_classes,
            scores=fused.scores,
        )
        for v, t in zip(views, tfms)
    ]
    outputs = member.model.inference(views, given, do_postprocess=False)
    return [
        o.pred_masks.cpu().flip(dims=[3]) if _mirrored(t) else o.pred_masks.cpu()
        for o, t in zip(outputs, tfms)
    ]


@torch.no_grad()
def ensemble_predict(
    members: Sequence[EnsembleMember],
    image: Dict[str, np.ndarray],
    height: int,
    width: int,
    fusion: DetectionNMS,
    nms_thresh: float,
    max_detections: int,
) -> Instances:
    """Fused detections of one image.

    Args:
        members: the ensemble.
        image: the image as ``HWC uint8`` per input format (``{"BGR": array}``).
        height, width: its size.
        fusion: the fusion rule (its ``select`` gets every member's every view).
        nms_thresh: IoU threshold of NMS (``"nms"`` and ``"voting"``).
        max_detections: keep at most this many fused detections (negative: all).

    Returns:
        Instances of size ``(height, width)``: ``pred_boxes``, ``scores``, ``pred_classes``
        and, when every member has masks, ``pred_masks`` (bool ``[R, height, width]``).
    """
    boxes, scores, classes, per_member = [], [], [], []
    for member in members:
        chw = torch.from_numpy(np.ascontiguousarray(image[member.input_format].transpose(2, 0, 1)))
        views = member.mapper({"image": chw, "height": height, "width": width})
        tfms = [v.pop("transforms") for v in views]
        per_member.append((views, tfms))
        for b, s, c in _view_detections(member, views, tfms):
            boxes.append(b)
            scores.append(s)
            classes.append(c)
    num_sources = sum(len(t) for _, t in per_member)
    all_boxes = Boxes(torch.cat(boxes))
    all_boxes.clip((height, width))
    fused_boxes, fused_scores, fused_classes, _ = fusion.select(
        all_boxes.tensor, torch.cat(scores), torch.cat(classes), nms_thresh, num_sources,
        topk=max_detections,
    )
    fused = Instances((height, width))
    fused.pred_boxes = Boxes(fused_boxes)
    fused.scores = fused_scores
    fused.pred_classes = fused_classes
    if not all(m.mask_on for m in members):
        return fused
    masks = []
    for member, (views, tfms) in zip(members, per_member):
        masks.extend(_view_masks(member, views, tfms, fused))
    sizes = {tuple(m.shape[2:]) for m in masks}
    if len(sizes) > 1:
        raise ValueError(f"ensemble members predict masks of different sizes {sorted(sizes)}.")
    fused.pred_masks = torch.stack(masks).mean(dim=0)
    return detector_postprocess(fused, height, width)


def _read_formats(file_name: str, formats) -> Dict[str, np.ndarray]:
    read_image = import_module("data.detection_utils").read_image
    return {fmt: read_image(file_name, fmt) for fmt in formats}


def evaluate_members(
    members: Sequence[EnsembleMember],
    dataset: str,
    output_dir: str,
    fusion: DetectionNMS,
    nms_thresh: float,
    max_detections: int,
) -> Dict[str, Dict[str, float]]:
    """Run :func:`ensemble_predict` on every image of ``dataset`` (tqdm progress) and
    evaluate with the backend's ``COCOEvaluator`` (writing ``output_dir``)."""
    dicts = DatasetCatalog.get(dataset)
    evaluator = COCOEvaluator(dataset, output_dir=output_dir)
    evaluator.reset()
    formats = sorted({m.input_format for m in members})
    for d in tqdm(dicts, desc=f"ensemble of {len(members)} on {dataset}", unit="img",
                  dynamic_ncols=True):
        image = _read_formats(d["file_name"], formats)
        height, width = image[formats[0]].shape[:2]
        instances = ensemble_predict(
            members, image, height, width, fusion, nms_thresh, max_detections
        )
        evaluator.process([{"image_id": d["image_id"], "height": height, "width": width}],
                          [{"instances": instances}])
    return evaluator.evaluate()


# ---------------------------------------------------------------- saved predictions


def _load_results(path: str) -> List[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--results file {path!r} does not exist.")
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"--results file {path!r} is not valid JSON ({e}).") from None
    if not isinstance(results, list) or any(
        not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r)
        for r in results
    ):
        raise ValueError(
            f"--results file {path!r} is not a COCO results list (dicts with image_id, "
            "category_id, bbox, score)."
        )
    return results


def fuse_results(
    results_per_file: Sequence[List[dict]], fusion: DetectionNMS, nms_thresh: float,
    max_detections: int = 100,
) -> List[dict]:
    """Fuse COCO-format detections of several files per image and category.

    Returns:
        COCO results: fused ``bbox`` (XYWH), ``score``, ``category_id``, and the
        ``segmentation`` of each fused detection's source (highest-scoring) detection when
        it has one.
    """
    per_image = defaultdict(list)
    for results in results_per_file:
        for r in results:
            per_image[r["image_id"]].append(r)
    fused_all = []
    for image_id in sorted(per_image):
        dets = per_image[image_id]
        xywh = torch.tensor([d["bbox"] for d in dets], dtype=torch.float64).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        scores = torch.tensor([d["score"] for d in dets], dtype=torch.float64)
        classes = torch.tensor([d["category_id"] for d in dets], dtype=torch.int64)
        b, s, c, src = fusion.select(boxes, scores, classes, nms_thresh, len(results_per_file),
                                     topk=max_detections)
        for box, score, cls, i in zip(b.tolist(), s.tolist(), c.tolist(), src.tolist()):
            out = {
                "image_id": image_id,
                "category_id": cls,
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "score": score,
            }
            if "segmentation" in dets[i]:
                out["segmentation"] = dets[i]["segmentation"]
            fused_all.append(out)
    return fused_all


def coco_evaluate(json_file: str, results: List[dict], tasks: Sequence[str]):
    """COCO AP (x100, detectron2's names AP, AP50, AP75, APs, APm, APl) per task."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(json_file)
    out = {}
    for task in tasks:
        if not results:
            out[task] = {k: float("nan") for k in _COCO_STATS}
            continue
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, task)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        # pycocotools reports -1 where a size range has no ground truth; detectron2 shows NaN
        out[task] = {
            k: float(v * 100) if v >= 0 else float("nan") for k, v in zip(_COCO_STATS, ev.stats[:6])
        }
    return out


def fuse_result_files(
    paths: Sequence[str], dataset: str, output_dir: str, fusion: DetectionNMS,
    nms_thresh: float, max_detections: int = 100,
) -> Dict[str, Dict[str, float]]:
    """Fuse saved ``coco_instances_results.json`` files, write the fused file to
    ``output_dir`` and evaluate it against ``dataset``'s json (``bbox``; ``segm`` when every
    detection has a segmentation)."""
    json_file = getattr(MetadataCatalog.get(dataset), "json_file", None)
    if not json_file:
        raise ValueError(f"--dataset {dataset!r} has no COCO json_file in its metadata.")
    fused = fuse_results([_load_results(p) for p in paths], fusion, nms_thresh, max_detections)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "coco_instances_results.json"), "w") as f:
        json.dump(fused, f)
    tasks = ["bbox"] + (["segm"] if fused and all("segmentation" in r for r in fused) else [])
    return coco_evaluate(json_file, fused, tasks)


# ---------------------------------------------------------------- command line


def append_metrics(output_dir: str, results: Dict[str, Dict[str, float]], extra: Dict) -> None:
    """One line in ``output_dir/metrics.json``: flattened results plus ``extra``."""
    line = {f"{task}/{k}": float(v) for task, res in results.items() for k, v in res.items()}
    line.update(extra)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sephnet.tools.ensemble",
        description="COCO AP of fused detections: several models (--model) or saved "
        "prediction files (--results).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", nargs=2, action="append", metavar=("CONFIG", "WEIGHTS"),
                        help="a member: its config file and weights (repeat for each member)")
    source.add_argument("--results", nargs="+", metavar="JSON",
                        help="coco_instances_results.json files of the same dataset to fuse")
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. shapes_val")
    parser.add_argument("--tta", action="store_true",
                        help="members see their TEST.AUG.* views (sizes and flips)")
    parser.add_argument("--fusion", choices=_FUSIONS, default="nms",
                        help="nms: per-class NMS; voting: NMS + box voting; wbf: weighted boxes "
                        "fusion (default: nms)")
    parser.add_argument("--nms-thresh", type=float, default=None,
                        help="IoU of NMS (default: the first member's "
                        "MODEL.ROI_HEADS.NMS_THRESH_TEST, 0.5 for --results)")
    parser.add_argument("--fusion-iou", type=float, default=None,
                        help="IoU of box voting (>=, default 0.5) or WBF clustering (>, default "
                        "0.55)")
    parser.add_argument("--output", default="output/ensemble", help="output folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides applied to every member (KEY VALUE ...)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fusion_iou = args.fusion_iou
    if fusion_iou is None:
        fusion_iou = 0.55 if args.fusion == "wbf" else 0.5
    fusion = DetectionNMS(
        fusion={"nms": "none", "voting": "voting", "wbf": "wbf"}[args.fusion],
        fusion_iou_thresh=fusion_iou,
    )
    if args.dataset not in DatasetCatalog.list():
        raise ValueError(
            f"--dataset {args.dataset!r} is not registered; known: "
            f"{', '.join(sorted(DatasetCatalog.list()))}."
        )
    if args.results:
        nms_thresh = 0.5 if args.nms_thresh is None else args.nms_thresh
        results = fuse_result_files(args.results, args.dataset, args.output, fusion, nms_thresh)
        sources = {"ensemble/num_members": len(args.results)}
    else:
        loaded = [load_member(c, w, args.tta, args.opts) for c, w in args.model]
        members = [m for m, _ in loaded]
        first = loaded[0][1]
        nms_thresh = (
            first.MODEL.ROI_HEADS.NMS_THRESH_TEST if args.nms_thresh is None else args.nms_thresh
        )
        results = evaluate_members(
            members, args.dataset, args.output, fusion, nms_thresh,
            first.TEST.DETECTIONS_PER_IMAGE,
        )
        sources = {"ensemble/num_members": len(members), "ensemble/tta": float(args.tta)}
    append_metrics(args.output, results, sources)
    for task, res in results.items():
        print(f"{task}: " + "  ".join(f"{k} {v:.2f}" for k, v in res.items()
                                       if k in _COCO_STATS))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
