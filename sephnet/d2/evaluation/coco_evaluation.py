"""COCO-style evaluation of detections, instance masks, keypoints and proposals.

:class:`COCOEvaluator` collects each image's predicted ``Instances`` as COCO result dicts,
gathers them on the main process, and scores them with the COCO API against the dataset's
COCO json (converting the registered dataset to COCO json first when its metadata has no
``json_file``). Metrics are COCO's, in percent: ``AP, AP50, AP75, APs, APm, APl`` per task
(``APs`` is absent for keypoints) plus ``AP-<class name>`` per category.

Two COCO API implementations give the same numbers: pycocotools (the official one) and
faster-coco-eval's C++ ``COCOeval_faster`` (used when ``use_fast_impl`` and it imports).
The summary numbers are computed here from the accumulated precision/recall arrays, so
both back-ends, and a custom ``max_dets_per_image``, go through the same code.
"""

import contextlib
import copy
import io
import itertools
import json
import logging
import os
import pickle
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

import sephnet.d2.utils.comm as comm
from sephnet.d2.config import CfgNode
from sephnet.d2.data.catalog import MetadataCatalog
from sephnet.d2.data.datasets.coco import convert_to_coco_json
from sephnet.d2.evaluation.evaluator import DatasetEvaluator
from sephnet.d2.structures import Boxes, BoxMode, Instances, pairwise_iou
from sephnet.d2.utils.file_io import PathManager
from sephnet.d2.utils.logger import create_small_table

__all__ = ["COCOEvaluator", "instances_to_coco_json"]

_TASKS = ("bbox", "segm", "keypoints")
_METRIC_NAMES = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
}


def _fast_coco_api() -> Optional[Tuple[Any, Any]]:
    """faster-coco-eval's ``(COCO, COCOeval_faster)``, or ``None`` when it does not import."""
    try:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster
    except Exception:  # a broken binary raises more than ImportError
        return None
    return FastCOCO, COCOeval_faster


class COCOEvaluator(DatasetEvaluator):
    """AP for boxes / masks / keypoints and AR for proposals, with COCO's definitions.

    Works for any dataset registered in ``DatasetCatalog``: a dataset whose metadata has no
    ``json_file`` is converted to COCO json (cached in ``output_dir``). Values are in
    percent; NaN means "cannot be computed" (e.g. no predictions).
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
        use_fast_impl: bool = True,
        kpt_oks_sigmas: Sequence[float] = (),
        allow_cached_coco: bool = True,
    ):
        """
        Args:
            dataset_name: a name registered in ``MetadataCatalog``/``DatasetCatalog``.
            tasks: subset of ``("bbox", "segm", "keypoints")``; default: inferred from the
                predictions (bbox always, segm when masks are predicted, ...). A ``CfgNode``
                is accepted for backward compatibility (deprecated; tasks are then
                inferred and ``TEST.KEYPOINT_OKS_SIGMAS`` is used).
            distributed: gather predictions from all ranks and evaluate on rank 0; otherwise
                evaluate only this process's predictions.
            output_dir: where to write ``instances_predictions.pth`` (raw predictions),
                ``coco_instances_results.json`` (COCO results) and, for datasets without a
                json file, ``<dataset_name>_coco_format.json``.
            max_dets_per_image: detections per image considered by AP (COCO: 100).
                Does not affect keypoints.
            use_fast_impl: use faster-coco-eval's C++ evaluator when it is installed.
            kpt_oks_sigmas: per-keypoint OKS sigmas; empty means COCO's.
            allow_cached_coco: reuse an existing converted json in ``output_dir``.

        Raises:
            ValueError: the dataset has no ``json_file`` and ``output_dir`` is None; a task
                is not one of bbox/segm/keypoints.
        """
        self._logger = logging.getLogger(__name__)
        self._distributed = distributed
        self._output_dir = output_dir
        self._use_fast_impl = use_fast_impl
        # COCOeval wants three maxDets; the third is the per-image limit used for AP.
        self._max_dets_per_image = [
            1,
            10,
            100 if max_dets_per_image is None else max_dets_per_image,
        ]

        if isinstance(tasks, CfgNode):
            if not kpt_oks_sigmas:
                kpt_oks_sigmas = tasks.TEST.KEYPOINT_OKS_SIGMAS
            self._logger.warning(
                "COCOEvaluator(dataset_name, cfg) is the deprecated form; pass tasks, "
                "output_dir and the other options as arguments."
            )
            self._tasks = None
        else:
            if tasks is not None:
                unknown = [t for t in tasks if t not in _TASKS]
                if unknown:
                    raise ValueError(f"Unknown COCOEvaluator tasks {unknown}; expected {_TASKS}.")
            self._tasks = tasks
        self._kpt_oks_sigmas = kpt_oks_sigmas
        self._cpu_device = torch.device("cpu")

        self._metadata = MetadataCatalog.get(dataset_name)
        if not hasattr(self._metadata, "json_file"):
            if output_dir is None:
                raise ValueError(
                    f"COCOEvaluator needs output_dir for dataset '{dataset_name}': it has no "
                    "json_file in its metadata, so a COCO json is written there first."
                )
            self._logger.info(f"'{dataset_name}' has no COCO json; writing one for evaluation.")
            cache_path = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            self._metadata.json_file = cache_path
            convert_to_coco_json(dataset_name, cache_path, allow_cached=allow_cached_coco)

        json_file = PathManager.get_local_path(self._metadata.json_file)
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_api = COCO(json_file)
        # A test-split json has no annotations: results can be dumped but not scored.
        self._do_evaluation = "annotations" in self._coco_api.dataset

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """
        Args:
            inputs: model inputs, one dict per image with at least ``"image_id"``.
            outputs: model outputs, one dict per image with ``"instances"`` (``Instances``
                with ``pred_boxes``, ``scores``, ``pred_classes`` and optionally
                ``pred_masks`` [N, H, W] / ``pred_keypoints`` [N, K, 3]) and/or
                ``"proposals"`` (``Instances`` with ``proposal_boxes``,
                ``objectness_logits``).
        """
        for inp, out in zip(inputs, outputs):
            prediction: Dict[str, Any] = {"image_id": inp["image_id"]}
            if "instances" in out:
                instances = out["instances"].to(self._cpu_device)
                prediction["instances"] = instances_to_coco_json(instances, inp["image_id"])
            if "proposals" in out:
                prediction["proposals"] = out["proposals"].to(self._cpu_device)
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> Dict[str, Dict[str, float]]:
        """Score everything processed since ``reset()``.

        Args:
            img_ids: restrict AP to these image ids; default: every image of the dataset.

        Returns:
            ``{task: {metric: value}}`` on the main process (``{}`` on other ranks, or when
            nothing was predicted).
        """
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            predictions = list(itertools.chain(*gathered))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        if not predictions:
            self._logger.warning("[COCOEvaluator] No predictions to evaluate.")
            return {}

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(
                os.path.join(self._output_dir, "instances_predictions.pth"), "wb"
            ) as f:
                torch.save(predictions, f)

        self._results: Dict[str, Dict[str, float]] = OrderedDict()
        if "proposals" in predictions[0]:
            self._eval_box_proposals(predictions)
        if "instances" in predictions[0]:
            self._eval_predictions(predictions, img_ids=img_ids)
        return copy.deepcopy(self._results)

    def _tasks_from_predictions(self, coco_results: List[Dict[str, Any]]) -> List[str]:
        tasks = {"bbox"}
        for result in coco_results:
            if "segmentation" in result:
                tasks.add("segm")
            if "keypoints" in result:
                tasks.add("keypoints")
        return sorted(tasks)

    def _eval_predictions(
        self, predictions: List[Dict[str, Any]], img_ids: Optional[Sequence[int]] = None
    ) -> None:
        self._logger.info("Converting predictions to COCO results ...")
        # copies, so that mapping category ids below leaves the stored predictions as they
        # were (evaluate() may be called more than once)
        coco_results = [dict(r) for p in predictions for r in p["instances"]]
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        # The model predicts contiguous ids 0..K-1; the json uses the dataset's own ids.
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map is not None:
            num_classes = len(id_map)
            if sorted(id_map.values()) != list(range(num_classes)):
                raise ValueError(
                    "thing_dataset_id_to_contiguous_id must map onto 0..K-1, got "
                    f"{sorted(id_map.values())}."
                )
            reverse = {v: k for k, v in id_map.items()}
            for result in coco_results:
                category_id = result["category_id"]
                if not 0 <= category_id < num_classes:
                    raise ValueError(
                        f"A prediction has class={category_id}, but the dataset only has "
                        f"{num_classes} classes and predicted class id should be in "
                        f"[0, {num_classes - 1}]."
                    )
                result["category_id"] = reverse[category_id]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Writing COCO results to %s", file_path)
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
                f.flush()

        if not self._do_evaluation:
            self._logger.info("The dataset has no annotations; nothing to evaluate.")
            return

        fast = self._use_fast_impl and _fast_coco_api() is not None
        self._logger.info(
            "COCO evaluation with %s", "faster-coco-eval" if fast else "pycocotools"
        )
        for task in sorted(tasks):
            if task not in _TASKS:
                raise ValueError(f"Got unknown task: {task}!")
            stats, precision = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    use_fast_impl=fast,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if coco_results
                else (None, None)  # the COCO API cannot load an empty result list
            )
            self._results[task] = self._derive_coco_results(
                stats, precision, task, class_names=self._metadata.get("thing_classes")
            )

    def _eval_box_proposals(self, predictions: List[Dict[str, Any]]) -> None:
        """Average recall of the proposals at 100 and 1000 per image, per area range."""
        if self._output_dir:
            proposal_data = {
                "boxes": [p["proposals"].proposal_boxes.tensor.numpy() for p in predictions],
                "objectness_logits": [
                    p["proposals"].objectness_logits.numpy() for p in predictions
                ],
                "ids": [p["image_id"] for p in predictions],
                "bbox_mode": BoxMode.XYXY_ABS.value,
            }
            with PathManager.open(os.path.join(self._output_dir, "box_proposals.pkl"), "wb") as f:
                pickle.dump(proposal_data, f)

        if not self._do_evaluation:
            self._logger.info("The dataset has no annotations; nothing to evaluate.")
            return

        self._logger.info("Evaluating box proposals (average recall) ...")
        res: Dict[str, float] = {}
        for limit in (100, 1000):
            for area, suffix in (("all", ""), ("small", "s"), ("medium", "m"), ("large", "l")):
                stats = _evaluate_box_proposals(predictions, self._coco_api, area=area, limit=limit)
                res[f"AR{suffix}@{limit:d}"] = float(stats["ar"].item() * 100)
        self._logger.info("Proposal metrics: \n" + create_small_table(res))
        self._results["box_proposals"] = res

    def _derive_coco_results(
        self,
        stats: Optional[np.ndarray],
        precision: Optional[np.ndarray],
        iou_type: str,
        class_names: Optional[Sequence[str]] = None,
    ) -> Dict[str, float]:
        """Turn the COCO summary stats into named percentages, plus per-category AP.

        Args:
            stats: COCO's summary vector (None when there were no predictions).
            precision: accumulated precision [T, R, K, A, M] (IoU thresholds, recall
                thresholds, categories, area ranges, max-dets settings).
            iou_type: "bbox", "segm" or "keypoints".
            class_names: category names in contiguous-id order; enables ``AP-<name>``.
        """
        metrics = _METRIC_NAMES[iou_type]
        if stats is None:
            self._logger.warning("No predictions from the model!")
            return {metric: float("nan") for metric in metrics}

        results = {
            metric: float(stats[idx] * 100 if stats[idx] >= 0 else "nan")
            for idx, metric in enumerate(metrics)
        }
        self._logger.info(
            "Evaluation results for {}: \n".format(iou_type) + create_small_table(results)
        )
        if not np.isfinite(sum(results.values())):
            self._logger.info("Metrics without ground truth in their range are reported as NaN.")
        if class_names is None or len(class_names) <= 1:
            return results

        if len(class_names) != precision.shape[2]:
            raise ValueError(
                f"The dataset has {precision.shape[2]} categories in its json but "
                f"{len(class_names)} thing_classes in its metadata."
            )
        per_category = []
        for idx, name in enumerate(class_names):
            # all IoU thresholds and recall points, area "all", the largest max-dets
            valid = precision[:, :, idx, 0, -1]
            valid = valid[valid > -1]
            ap = np.mean(valid) if valid.size else float("nan")
            per_category.append((str(name), float(ap * 100)))

        table = _per_category_table(per_category)
        self._logger.info("Per-category {} AP: \n".format(iou_type) + table)
        results.update({"AP-" + name: ap for name, ap in per_category})
        return results


def _per_category_table(per_category: List[Tuple[str, float]]) -> str:
    """Lay ``(name, AP)`` pairs out as a markdown table with up to three pairs per row."""
    pairs_per_row = min(3, len(per_category))
    rows = []
    for start in range(0, len(per_category), pairs_per_row):
        chunk = per_category[start : start + pairs_per_row]
        row: List[Any] = [item for pair in chunk for item in pair]
        rows.append(row + [None] * (2 * pairs_per_row - len(row)))
    return tabulate(
        rows,
        tablefmt="pipe",
        floatfmt=".3f",
        headers=["category", "AP"] * pairs_per_row,
        numalign="left",
    )


def instances_to_coco_json(instances: Instances, img_id: int) -> List[Dict[str, Any]]:
    """Convert one image's predictions to COCO result dicts.

    Args:
        instances: ``pred_boxes`` (``Boxes``, XYXY absolute), ``scores`` [N] float,
            ``pred_classes`` [N] int64 (contiguous ids); optionally ``pred_masks``
            [N, H, W] bool/uint8 (encoded as RLE with a utf-8 ``counts`` string) and
            ``pred_keypoints`` [N, K, 3] (x, y, score; shifted by -0.5 to COCO's pixel-index
            convention).
        img_id: the image's id in the COCO json.

    Returns:
        One dict per instance: ``image_id``, ``category_id``, ``bbox`` (XYWH), ``score`` and,
        when present, ``segmentation`` / ``keypoints``.
    """
    if len(instances) == 0:
        return []
    boxes = BoxMode.convert(instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    boxes = boxes.tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()

    rles = None
    if instances.has("pred_masks"):
        # RLE keeps the memory of a whole dataset's masks small.
        rles = []
        for mask in instances.pred_masks:
            mask_np = (
                np.asarray(mask, dtype=np.uint8)
                if not torch.is_tensor(mask)
                else mask.numpy().astype(np.uint8)
            )
            rle = mask_util.encode(np.asfortranarray(mask_np[:, :, None]))[0]
            rle["counts"] = rle["counts"].decode("utf-8")  # json cannot hold bytes
            rles.append(rle)
    keypoints = None
    if instances.has("pred_keypoints"):
        keypoints = (
            instances.pred_keypoints.clone()
            if torch.is_tensor(instances.pred_keypoints)
            else copy.deepcopy(instances.pred_keypoints)
        )
        # Predictions are continuous coordinates; COCO keypoints are pixel indices.
        keypoints[..., :2] -= 0.5

    results = []
    for k in range(len(instances)):
        result = {
            "image_id": img_id,
            "category_id": classes[k],
            "bbox": boxes[k],
            "score": scores[k],
        }
        if rles is not None:
            result["segmentation"] = rles[k]
        if keypoints is not None:
            result["keypoints"] = keypoints[k].flatten().tolist()
        results.append(result)
    return results


_AREA_RANGES = {
    "all": (0**2, 1e5**2),
    "small": (0**2, 32**2),
    "medium": (32**2, 96**2),
    "large": (96**2, 1e5**2),
    "96-128": (96**2, 128**2),
    "128-256": (128**2, 256**2),
    "256-512": (256**2, 512**2),
    "512-inf": (512**2, 1e5**2),
}


def _greedy_gt_coverage(overlaps: torch.Tensor) -> torch.Tensor:
    """Greedy one-to-one matching of proposals to gt boxes by IoU.

    Args:
        overlaps: IoU matrix [P, G] (proposals x gt boxes).

    Returns:
        [G] float tensor: the IoU recorded at each of the ``min(P, G)`` greedy steps (0 for
        the remaining slots). Each step takes the largest remaining IoU in the matrix (ties:
        lowest gt index, then lowest proposal index) and retires its proposal and gt box.
    """
    overlaps = overlaps.clone()
    num_props, num_gt = overlaps.shape
    recorded = torch.zeros(num_gt)
    for step in range(min(num_props, num_gt)):
        # scanning gt-major makes argmax's first hit the lowest gt, then the lowest proposal
        flat_idx = int(overlaps.t().reshape(-1).argmax())
        gt_idx, prop_idx = divmod(flat_idx, num_props)
        recorded[step] = overlaps[prop_idx, gt_idx]
        overlaps[prop_idx, :] = -1
        overlaps[:, gt_idx] = -1
    return recorded


def _evaluate_box_proposals(
    dataset_predictions: List[Dict[str, Any]],
    coco_api: COCO,
    thresholds: Optional[torch.Tensor] = None,
    area: str = "all",
    limit: Optional[int] = None,
) -> Dict[str, Any]:
    """Proposal recall (Detectron's fast approximation of COCO AR).

    For each image the top-``limit`` proposals (by objectness) are greedily matched one to
    one to the non-crowd gt boxes of the area range (:func:`_greedy_gt_coverage`). Recall
    at each IoU threshold (default 0.50:0.05:0.95) is the fraction of gt boxes with a
    recorded IoU >= threshold; AR is the mean over thresholds.
    """
    if area not in _AREA_RANGES:
        raise ValueError(f"Unknown area range: {area}; expected one of {list(_AREA_RANGES)}.")
    lo, hi = _AREA_RANGES[area]
    covered: List[torch.Tensor] = []
    num_pos = 0
    for prediction in dataset_predictions:
        proposals = prediction["proposals"]
        order = proposals.objectness_logits.sort(descending=True)[1]
        proposals = proposals[order]

        anns = [
            a
            for a in coco_api.loadAnns(coco_api.getAnnIds(imgIds=prediction["image_id"]))
            if a["iscrowd"] == 0
        ]
        gt = torch.as_tensor(
            [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in anns]
        ).reshape(-1, 4)
        gt_areas = torch.as_tensor([a["area"] for a in anns])
        if len(gt) == 0 or len(proposals) == 0:
            continue
        gt = gt[(gt_areas >= lo) & (gt_areas <= hi)]
        num_pos += len(gt)
        if len(gt) == 0:
            continue
        if limit is not None and len(proposals) > limit:
            proposals = proposals[:limit]

        covered.append(_greedy_gt_coverage(pairwise_iou(proposals.proposal_boxes, Boxes(gt))))

    gt_overlaps = torch.cat(covered, dim=0) if covered else torch.zeros(0, dtype=torch.float32)
    gt_overlaps, _ = torch.sort(gt_overlaps)
    if thresholds is None:
        thresholds = torch.arange(0.5, 0.95 + 1e-5, 0.05, dtype=torch.float32)
    recalls = torch.zeros_like(thresholds)
    for i, t in enumerate(thresholds):
        recalls[i] = (gt_overlaps >= t).float().sum() / float(num_pos)
    return {
        "ar": recalls.mean(),
        "recalls": recalls,
        "thresholds": thresholds,
        "gt_overlaps": gt_overlaps,
        "num_pos": num_pos,
    }


def _summary_value(
    coco_eval: Any,
    ap: bool,
    iou_thr: Optional[float] = None,
    area: str = "all",
    max_dets: int = 100,
) -> float:
    """Mean precision (``ap``) or recall over valid entries of one COCO summary cell; -1 if none."""
    params = coco_eval.params
    arr = coco_eval.eval["precision" if ap else "recall"]
    if iou_thr is not None:
        arr = arr[np.where(np.isclose(params.iouThrs, iou_thr))[0]]
    a_idx = [i for i, label in enumerate(params.areaRngLbl) if label == area]
    m_idx = [i for i, m in enumerate(params.maxDets) if m == max_dets]
    arr = arr[:, :, :, a_idx, :][..., m_idx] if ap else arr[:, :, a_idx, :][..., m_idx]
    valid = arr[arr > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summarize(coco_eval: Any, iou_type: str) -> np.ndarray:
    """COCO's summary vector, from the accumulated arrays.

    Boxes/masks (12 values): AP, AP50, AP75, APs, APm, APl at the largest max-dets, then AR
    at each of the three max-dets, then ARs, ARm, ARl. Keypoints (10 values, max-dets 20):
    AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl.
    """
    md = coco_eval.params.maxDets

    def s(
        ap: bool, iou_thr: Optional[float] = None, area: str = "all", max_dets: int = 100
    ) -> float:
        return _summary_value(coco_eval, ap, iou_thr, area, max_dets)

    if iou_type == "keypoints":
        last = md[-1]
        return np.array(
            [
                s(True, max_dets=last),
                s(True, 0.5, max_dets=last),
                s(True, 0.75, max_dets=last),
                s(True, area="medium", max_dets=last),
                s(True, area="large", max_dets=last),
                s(False, max_dets=last),
                s(False, 0.5, max_dets=last),
                s(False, 0.75, max_dets=last),
                s(False, area="medium", max_dets=last),
                s(False, area="large", max_dets=last),
            ]
        )
    last = md[2]
    return np.array(
        [
            s(True, max_dets=last),
            s(True, 0.5, max_dets=last),
            s(True, 0.75, max_dets=last),
            s(True, area="small", max_dets=last),
            s(True, area="medium", max_dets=last),
            s(True, area="large", max_dets=last),
            s(False, max_dets=md[0]),
            s(False, max_dets=md[1]),
            s(False, max_dets=last),
            s(False, area="small", max_dets=last),
            s(False, area="medium", max_dets=last),
            s(False, area="large", max_dets=last),
        ]
    )


def _evaluate_predictions_on_coco(
    coco_gt: COCO,
    coco_results: List[Dict[str, Any]],
    iou_type: str,
    kpt_oks_sigmas: Optional[Sequence[float]] = None,
    use_fast_impl: bool = True,
    img_ids: Optional[Sequence[int]] = None,
    max_dets_per_image: Optional[List[int]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Run COCO's evaluate + accumulate for one task and summarise it.

    Args:
        coco_gt: the ground truth (a pycocotools ``COCO``).
        coco_results: non-empty list of COCO result dicts (not modified).
        iou_type: "bbox", "segm" or "keypoints".
        kpt_oks_sigmas: per-keypoint OKS sigmas; empty/None uses COCO's.
        use_fast_impl: score with faster-coco-eval (its own ``COCO`` objects built from the
            same data) instead of pycocotools.
        img_ids: image ids to evaluate; default all.
        max_dets_per_image: the three maxDets; default ``[1, 10, 100]``.

    Returns:
        ``(stats, precision)``: the summary vector (see :func:`_summarize`) and the
        accumulated precision array [T, R, K, A, M].
    """
    if not coco_results:
        raise ValueError("coco_results must not be empty; the COCO API cannot load it.")
    if max_dets_per_image is None:
        max_dets_per_image = [1, 10, 100]
    elif len(max_dets_per_image) < 3:
        raise ValueError(
            f"COCOeval requires maxDets (and max_dets_per_image) to have length at least 3, "
            f"got {max_dets_per_image}."
        )
    # loadRes adds fields to the dicts it gets; keep the caller's list clean.
    coco_results = copy.deepcopy(coco_results)
    if iou_type == "segm":
        # With a "bbox" present the COCO API would take the box area as the instance area,
        # which changes the small/medium/large split; masks must use their own area.
        for result in coco_results:
            result.pop("bbox", None)

    fast_api = _fast_coco_api() if use_fast_impl else None
    with contextlib.redirect_stdout(io.StringIO()):
        if fast_api is not None:
            fast_coco, fast_eval = fast_api
            gt = fast_coco(copy.deepcopy(coco_gt.dataset))
            coco_eval = fast_eval(
                gt, gt.loadRes(coco_results), iou_type, print_function=lambda *a: None
            )
        else:
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(coco_results), iou_type)
    if iou_type != "keypoints":
        coco_eval.params.maxDets = list(max_dets_per_image)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)

    if iou_type == "keypoints":
        if kpt_oks_sigmas:
            coco_eval.params.kpt_oks_sigmas = np.array(kpt_oks_sigmas)
        num_dt = len(coco_results[0]["keypoints"]) // 3
        num_gt = len(next(iter(coco_gt.anns.values()))["keypoints"]) // 3
        num_oks = len(coco_eval.params.kpt_oks_sigmas)
        if not num_oks == num_dt == num_gt:
            raise ValueError(
                f"[COCOEvaluator] Prediction contain {num_dt} keypoints. "
                f"Ground truth contains {num_gt} keypoints. "
                f"The length of cfg.TEST.KEYPOINT_OKS_SIGMAS is {num_oks}. "
                "These three numbers must be equal (OKS sigmas are defined per keypoint)."
            )

    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    stats = _summarize(coco_eval, iou_type)
    _log_summary(stats, coco_eval, iou_type)
    return stats, np.asarray(coco_eval.eval["precision"])


def _log_summary(stats: np.ndarray, coco_eval: Any, iou_type: str) -> None:
    """Log the summary in the COCO API's familiar "Average Precision (AP) @[ ... ]" layout."""
    params = coco_eval.params
    iou_all = "{:0.2f}:{:0.2f}".format(params.iouThrs[0], params.iouThrs[-1])
    md = params.maxDets
    if iou_type == "keypoints":
        last = md[-1]
        rows = [
            (1, iou_all, "all", last),
            (1, "0.50", "all", last),
            (1, "0.75", "all", last),
            (1, iou_all, "medium", last),
            (1, iou_all, "large", last),
            (0, iou_all, "all", last),
            (0, "0.50", "all", last),
            (0, "0.75", "all", last),
            (0, iou_all, "medium", last),
            (0, iou_all, "large", last),
        ]
    else:
        last = md[2]
        rows = [
            (1, iou_all, "all", last),
            (1, "0.50", "all", last),
            (1, "0.75", "all", last),
            (1, iou_all, "small", last),
            (1, iou_all, "medium", last),
            (1, iou_all, "large", last),
            (0, iou_all, "all", md[0]),
            (0, iou_all, "all", md[1]),
            (0, iou_all, "all", last),
            (0, iou_all, "small", last),
            (0, iou_all, "medium", last),
            (0, iou_all, "large", last),
        ]
    lines = [
        " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}".format(
            "Average Precision" if ap else "Average Recall",
            "(AP)" if ap else "(AR)",
            iou,
            area,
            max_dets,
            value,
        )
        for (ap, iou, area, max_dets), value in zip(rows, stats)
    ]
    logging.getLogger(__name__).info("COCOeval summary for %s:\n%s", iou_type, "\n".join(lines))
