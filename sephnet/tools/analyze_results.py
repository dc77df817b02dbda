"""Where a detector's AP goes: per-class AP, a confusion matrix and a TIDE-style error breakdown.

Usage (the results file is what ``COCOEvaluator`` writes, ``inference/coco_instances_results.json``)::

    python -m sephnet.tools.analyze_results --dataset shapes_val \\
        --results output/quickstart/inference/coco_instances_results.json --output output/errors

Writes into ``--output``: ``per_class_ap.md`` (AP, AP50, AP75 per class), ``errors.json`` and
``errors.png`` (the breakdown below), ``confusion_matrix.png`` and prints the tables.

**Error breakdown** (in the spirit of TIDE, Bolya et al. 2020). pycocotools' COCOeval matches
detections to ground truth at IoU 0.5 (``--iou-type bbox`` or ``segm``). Every unmatched,
non-ignored detection is then given one error type from its best IoU with same-class
ground truth (``iou_same``) and with other-class ground truth (``iou_other``), checked in this
order with the foreground threshold 0.5 and the background threshold 0.1:

====================  =============================================  =======================
type                  when                                           fixed by
====================  =============================================  =======================
duplicate             ``iou_same >= 0.5`` (its box was taken by a     removing it
                      higher-scoring detection)
classification        ``iou_other >= 0.5``                           relabelling it to that
                                                                     box's class (removed if
                                                                     the box is matched)
localization          ``0.1 <= iou_same < 0.5``                      moving it onto that box
                                                                     (removed if matched)
both                  ``0.1 <= iou_other < 0.5``                     removing it
background            both IoUs ``< 0.1``                            removing it
missed                ground truth left unmatched that no            dropping that ground
                      classification/localization fix targets        truth
====================  =============================================  =======================

Each type's **dAP** is the AP50 (COCO's 101-point AP at IoU 0.5, averaged over classes) after
fixing only the errors of that type, minus the AP50 as is: the AP that type costs.

**Confusion matrix**: detections with score >= ``--score-threshold`` (default 0.5) are matched
greedily by score to the unassigned ground truth of any class with the highest IoU >= 0.5.
Rows are ground-truth classes plus ``background`` (a detection matching nothing), columns are
predicted classes plus ``missed`` (ground truth that no detection matched).
"""
import argparse
import contextlib
import copy
import io
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "ERROR_TYPES",
    "load_results",
    "coco_from_dict",
    "ap_table",
    "classify_errors",
    "error_breakdown",
    "confusion_matrix",
    "main",
]

ERROR_TYPES = ("classification", "localization", "both", "duplicate", "background", "missed")
FG_IOU = 0.5
BG_IOU = 0.1


def coco_from_dict(dataset: Dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object from a COCO-format dict (no file, no prints)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_results(path: str, coco_gt: COCO) -> List[Dict[str, Any]]:
    """The detections of a ``coco_instances_results.json``, checked against ``coco_gt``.

    Raises:
        ValueError: the file is not a JSON list of detections, or names images or categories
            the ground truth lacks.
    """
    try:
        with open(path) as f:
            dets = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--results {path!r} does not exist.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--results {path!r} is not JSON ({e}).") from None
    if not isinstance(dets, list) or not all(isinstance(d, dict) for d in dets):
        raise ValueError(f"--results {path!r} must be a JSON list of detections.")
    images, cats = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for i, d in enumerate(dets):
        missing = {"image_id", "category_id", "bbox", "score"} - set(d)
        if missing:
            raise ValueError(f"--results {path!r}: detection {i} lacks {sorted(missing)}.")
        if d["image_id"] not in images:
            raise ValueError(f"--results {path!r}: detection {i} has image_id={d['image_id']}, "
                             "which the dataset does not have (wrong --dataset?).")
        if d["category_id"] not in cats:
            raise ValueError(f"--results {path!r}: detection {i} has category_id="
                             f"{d['category_id']}, which the dataset does not have.")
    return dets


def _evaluate(coco_gt: COCO, dets: List[Dict[str, Any]], iou_type: str,
              iou_thrs: Optional[Sequence[float]] = None) -> COCOeval:
    """COCOeval run (evaluate + accumulate) quietly; ``dets`` may be empty."""
    dets = [_for_iou_type(d, iou_type) for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        if not dets:
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": [],
                               "categories": coco_gt.dataset["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
    return ev


def _for_iou_type(det: Dict[str, Any], iou_type: str) -> Dict[str, Any]:
    # loadRes derives areas from "segmentation" when present: keep it only for segm.
    det = dict(det)
    det.pop("id", None)
    if iou_type == "bbox":
        det.pop("segmentation", None)
    elif "segmentation" not in det:
        raise ValueError("--iou-type segm needs detections with 'segmentation'.")
    return det


def _class_precision(ev: COCOeval, k: int, t: Optional[int] = None) -> float:
    """AP (area all, most detections) of class index k; over all IoU thresholds or one."""
    p = ev.eval["precision"][:, :, k, 0, -1] if t is None else ev.eval["precision"][t, :, k, 0, -1]
    p = p[p > -1]
    return float(np.mean(p)) * 100 if p.size else float("nan")


def ap_table(coco_gt: COCO, dets: List[Dict[str, Any]], iou_type: str = "bbox"
             ) -> List[Tuple[str, float, float, float]]:
    """Per class (name, AP, AP50, AP75) in percent, in category-id order; NaN where the class
    has no ground truth."""
    ev = _evaluate(coco_gt, dets, iou_type)
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    return [(names[cat], _class_precision(ev, k), _class_precision(ev, k, 0),
             _class_precision(ev, k, 5)) for k, cat in enumerate(ev.params.catIds)]


def ap50(coco_gt: COCO, dets: List[Dict[str, Any]], iou_type: str = "bbox") -> float:
    """COCO's AP at IoU 0.5 (percent), averaged over classes with ground truth."""
    ev = _evaluate(coco_gt, dets, iou_type, iou_thrs=[FG_IOU])
    values = [_class_precision(ev, k, 0) for k in range(len(ev.params.catIds))]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _geometry(item: Dict[str, Any], iou_type: str):
    return item["bbox"] if iou_type == "bbox" else item["segmentation"]


def _ious(dts: List[Dict], gts: List[Dict], iou_type: str) -> np.ndarray:
    """IoU matrix (D, G); crowd ground truth uses COCO's crowd IoU (overlap / detection)."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    crowd = [int(g.get("iscrowd", 0)) for g in gts]
    return np.asarray(mask_util.iou([_geometry(d, iou_type) for d in dts],
                                    [_geometry(g, iou_type) for g in gts], crowd))


def classify_errors(coco_gt: COCO, dets: List[Dict[str, Any]], iou_type: str = "bbox"
                    ) -> Tuple[List[Optional[Tuple[str, Optional[int]]]], List[int]]:
    """Error type of every detection and the missed ground truth (see module docstring).

    Returns:
        (per_detection, missed): ``per_detection[i]`` is None for a true positive (or an
        ignored detection), else ``(type, target_gt_id)`` where the target is the ground
        truth the fix uses (None for duplicate/both/background); ``missed`` lists the ids of
        unmatched, non-crowd ground truth no classification/localization fix targets.
    """
    matched_dt, ignored_dt, matched_gt = _matches(coco_gt, dets, iou_type)
    dets = [dict(d, id=i + 1) for i, d in enumerate(dets)]
    gts_by_image: Dict[int, List[Dict]] = {}
    for g in coco_gt.dataset["annotations"]:
        gts_by_image.setdefault(g["image_id"], []).append(g)

    per_detection: List[Optional[Tuple[str, Optional[int]]]] = []
    targeted = set()
    for d in dets:
        if d["id"] in matched_dt or d["id"] in ignored_dt:
            per_detection.append(None)
            continue
        gts = [g for g in gts_by_image.get(d["image_id"], []) if not g.get("iscrowd", 0)]
        ious = _ious([d], gts, iou_type)[0] if gts else np.zeros(0)
        same = [i for i, g in enumerate(gts) if g["category_id"] == d["category_id"]]
        other = [i for i, g in enumerate(gts) if g["category_id"] != d["category_id"]]
        best_same = max(same, key=lambda i: ious[i]) if same else None
        best_other = max(other, key=lambda i: ious[i]) if other else None
        iou_same = ious[best_same] if best_same is not None else 0.0
        iou_other = ious[best_other] if best_other is not None else 0.0
        if iou_same >= FG_IOU:
            kind = ("duplicate", None)
        elif iou_other >= FG_IOU:
            kind = ("classification", gts[best_other]["id"])
        elif iou_same >= BG_IOU:
            kind = ("localization", gts[best_same]["id"])
        elif iou_other >= BG_IOU:
            kind = ("both", None)
        else:
            kind = ("background", None)
        if kind[1] is not None:
            targeted.add(kind[1])
        per_detection.append(kind)
    missed = [g["id"] for g in coco_gt.dataset["annotations"]
              if not g.get("iscrowd", 0) and g["id"] not in matched_gt and g["id"] not in targeted]
    return per_detection, missed


def _fixed(coco_gt: COCO, dets: List[Dict[str, Any]], errors, missed, kind: str, iou_type: str
           ) -> Tuple[COCO, List[Dict[str, Any]]]:
    """Ground truth and detections after fixing the errors of one ``kind``."""
    if kind == "missed":
        dropped = set(missed)
        dataset = dict(coco_gt.dataset)
        dataset["annotations"] = [g for g in dataset["annotations"] if g["id"] not in dropped]
        return coco_from_dict(dataset), dets
    _, _, matched_gt = _matches(coco_gt, dets, iou_type)
    fixed = []
    for d, err in zip(dets, errors):
        if err is None or err[0] != kind:
            fixed.append(d)
            continue
        target = err[1]
        if target is None or target in matched_gt:
            continue  # removed: a duplicate, or the box it should be is already found
        gt = coco_gt.anns[target]
        d = dict(d)
        if kind == "classification":
            d["category_id"] = gt["category_id"]
        else:  # localization: onto the ground truth's geometry
            d["bbox"] = list(gt["bbox"])
            if iou_type == "segm":
                d["segmentation"] = coco_gt.annToRLE(gt)
        fixed.append(d)
    return coco_gt, fixed


def _matches(coco_gt: COCO, dets: List[Dict[str, Any]], iou_type: str):
    """COCOeval's matching at IoU 0.5 (area "all"): the 1-based indices of matched and of
    ignored detections, and the ids of matched ground truth."""
    dets = [dict(d, id=i + 1) for i, d in enumerate(dets)]
    ev = _evaluate(coco_gt, dets, iou_type, iou_thrs=[FG_IOU])
    matched_dt, ignored_dt, matched_gt = set(), set(), set()
    for e in ev.evalImgs:
        if e is None or e["aRng"] != ev.params.areaRng[0]:
            continue
        for dt_id, m, ign in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            if ign:
                ignored_dt.add(dt_id)
            elif m:
                matched_dt.add(dt_id)
                matched_gt.add(int(m))
    return matched_dt, ignored_dt, matched_gt


def error_breakdown(coco_gt: COCO, dets: List[Dict[str, Any]], iou_type: str = "bbox"
                    ) -> Dict[str, Any]:
    """{"ap50": AP50 as is, "counts": {type: n}, "dap": {type: AP50 gained by fixing it}}."""
    errors, missed = classify_errors(coco_gt, dets, iou_type)
    base = ap50(coco_gt, dets, iou_type)
    counts = {kind: sum(1 for e in errors if e is not None and e[0] == kind)
              for kind in ERROR_TYPES}
    counts["missed"] = len(missed)
    dap = {}
    for kind in ERROR_TYPES:
        gt_fixed, dets_fixed = _fixed(coco_gt, dets, errors, missed, kind, iou_type)
        dap[kind] = ap50(gt_fixed, dets_fixed, iou_type) - base
    return {"ap50": base, "counts": counts, "dap": dap}


def confusion_matrix(coco_gt: COCO, dets: List[Dict[str, Any]], score_threshold: float = 0.5,
                     iou_type: str = "bbox") -> Tuple[np.ndarray, List[str]]:
    """(K+1, K+1) int matrix and the K+1 labels (class names, then background/missed);
    see the module docstring."""
    cat_ids = sorted(coco_gt.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    k = len(cat_ids)
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    by_image: Dict[int, List[Dict]] = {}
    for d in dets:
        if d["score"] >= score_threshold:
            by_image.setdefault(d["image_id"], []).append(d)
    for image_id in coco_gt.getImgIds():
        gts = [g for g in coco_gt.imgToAnns.get(image_id, []) if not g.get("iscrowd", 0)]
        image_dets = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])
        ious = _ious(image_dets, gts, iou_type)
        free = np.ones(len(gts), dtype=bool)
        for i, d in enumerate(image_dets):
            candidates = np.where(free & (ious[i] >= FG_IOU))[0] if len(gts) else []
            if len(candidates):
                j = candidates[np.argmax(ious[i][candidates])]
                free[j] = False
                matrix[index[gts[j]["category_id"]], index[d["category_id"]]] += 1
            else:
                matrix[k, index[d["category_id"]]] += 1
        for j in np.where(free)[0]:
            matrix[index[gts[j]["category_id"]], k] += 1
    names = [coco_gt.cats[c]["name"] for c in cat_ids]
    return matrix, names + ["background / missed"]


def _plot_confusion(matrix: np.ndarray, names: List[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names) - 1
    rows, cols = names[:k] + ["background"], names[:k] + ["missed"]
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    for (r, c), v in np.ndenumerate(matrix):
        if v:
            ax.text(c, r, str(v), ha="center", va="center",
                    color="white" if v > matrix.max() / 2 else "black", fontsize=8)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_errors(breakdown: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    values = [breakdown["dap"][k] for k in ERROR_TYPES]
    ax.bar(ERROR_TYPES, values, color="tab:red")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("AP50 gained if fixed")
    ax.set_title(f"AP50 {breakdown['ap50']:.1f}: where the rest goes")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _dataset_coco(dataset_name: str) -> COCO:
    """Ground truth of a registered dataset from its COCO json (``MetadataCatalog``'s
    ``json_file``); the dataset is loaded once so built-in data are generated if needed."""
    from sephnet.backend import DatasetCatalog, MetadataCatalog  # registers nothing itself

    import sephnet  # noqa: F401  (registers the built-in datasets)

    DatasetCatalog.get(dataset_name)
    json_file = getattr(MetadataCatalog.get(dataset_name), "json_file", None)
    if not json_file:
        raise ValueError(f"--dataset {dataset_name!r} has no COCO json (MetadataCatalog "
                         "json_file); analyze_results needs one.")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def _markdown_ap(rows: List[Tuple[str, float, float, float]]) -> str:
    from tabulate import tabulate

    return tabulate([(n, f"{a:.1f}", f"{b:.1f}", f"{c:.1f}") for n, a, b, c in rows],
                    headers=["class", "AP", "AP50", "AP75"], tablefmt="pipe")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.analyze_results",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="registered dataset name")
    parser.add_argument("--results", required=True, help="coco_instances_results.json")
    parser.add_argument("--output", required=True, help="folder for the tables and charts")
    parser.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="detections counted in the confusion matrix (default 0.5)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        coco_gt = _dataset_coco(args.dataset)
        dets = load_results(args.results, coco_gt)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"analyze_results: {e}", file=sys.stderr)
        return 1
    os.makedirs(args.output, exist_ok=True)
    rows = ap_table(coco_gt, dets, args.iou_type)
    table = _markdown_ap(rows)
    with open(os.path.join(args.output, "per_class_ap.md"), "w") as f:
        f.write(table + "\n")
    breakdown = error_breakdown(coco_gt, dets, args.iou_type)
    with open(os.path.join(args.output, "errors.json"), "w") as f:
        json.dump(breakdown, f, indent=2)
    _plot_errors(breakdown, os.path.join(args.output, "errors.png"))
    matrix, names = confusion_matrix(coco_gt, dets, args.score_threshold, args.iou_type)
    _plot_confusion(matrix, names, os.path.join(args.output, "confusion_matrix.png"))
    print(f"Per-class {args.iou_type} AP on {args.dataset}:\n{table}\n")
    print(f"AP50 {breakdown['ap50']:.2f}; AP50 gained by fixing each error type:")
    for kind in ERROR_TYPES:
        print(f"  {kind:<15} {breakdown['dap'][kind]:6.2f}  ({breakdown['counts'][kind]} errors)")
    print(f"\nWrote per_class_ap.md, errors.json, errors.png, confusion_matrix.png to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
