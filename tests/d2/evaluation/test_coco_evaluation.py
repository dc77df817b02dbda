"""COCOEvaluator on small hand-made COCO datasets with AP values worked out by hand."""

import json
import os
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from sephnet.d2.data.catalog import DatasetCatalog, MetadataCatalog
from sephnet.d2.evaluation import COCOEvaluator
from sephnet.d2.evaluation.coco_evaluation import instances_to_coco_json
from sephnet.d2.structures import Boxes, BoxMode, Instances

H, W = 120, 160
# dataset category ids are 1 and 3 (not contiguous); the model predicts 0 and 1
GT = {
    1: [(1, [10.0, 10.0, 100.0, 100.0])],
    2: [(3, [20.0, 5.0, 60.0, 40.0]), (1, [90.0, 60.0, 50.0, 50.0])],
    3: [(3, [0.0, 0.0, 30.0, 30.0])],
}
TO_CONTIGUOUS = {1: 0, 3: 1}


def _rect_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _write_dataset(tmp_path, with_segm=False):
    annotations = []
    for image_id, objs in GT.items():
        for cat, (x, y, w, h) in objs:
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if with_segm:
                ann["segmentation"] = _rect_polygon(x, y, w, h)
            annotations.append(ann)
    data = {
        "images": [{"id": i, "width": W, "height": H, "file_name": f"{i}.jpg"} for i in GT],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    path = str(tmp_path / "gt.json")
    with open(path, "w") as f:
        json.dump(data, f)
    name = f"eval_test_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(
        json_file=path,
        thing_classes=["cat", "dog"],
        thing_dataset_id_to_contiguous_id=TO_CONTIGUOUS,
    )
    return name, path


def _instances(boxes_xywh, classes, scores, masks=None):
    inst = Instances((H, W))
    xyxy = BoxMode.convert(
        torch.tensor(boxes_xywh, dtype=torch.float32).reshape(-1, 4),
        BoxMode.XYWH_ABS,
        BoxMode.XYXY_ABS,
    )
    inst.pred_boxes = Boxes(xyxy)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    if masks is not None:
        inst.pred_masks = masks
    return inst


def _perfect_outputs():
    outputs = {}
    for image_id, objs in GT.items():
        outputs[image_id] = _instances(
            [box for _, box in objs], [TO_CONTIGUOUS[c] for c, _ in objs], [0.9] * len(objs)
        )
    return outputs


def _run(evaluator, outputs):
    evaluator.reset()
    for image_id, inst in outputs.items():
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()


@pytest.mark.parametrize("fast", [True, False])
def test_perfect_predictions_give_ap_100(tmp_path, fast):
    name, _ = _write_dataset(tmp_path)
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "out"), use_fast_impl=fast)
    results = _run(evaluator, _perfect_outputs())
    bbox = results["bbox"]
    assert list(bbox)[:6] == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP-cat", "AP-dog"):
        assert bbox[key] == pytest.approx(100.0), key
    # predictions were written, with category ids mapped back to the dataset's
    written = json.load(open(tmp_path / "out" / "coco_instances_results.json"))
    assert sorted({r["category_id"] for r in written}) == [1, 3]
    assert len(torch.load(tmp_path / "out" / "instances_predictions.pth", weights_only=False)) == 3


def _dog_ap(num_thresholds_matched):
    """AP of "dog" when image 2's dog is found exactly (score 0.9) and image 3's dog is found
    by a lower-scored box (0.8) that matches its gt at only the first
    ``num_thresholds_matched`` of COCO's 10 IoU thresholds.

    Where both match, AP = 1. Elsewhere the ranking is TP (0.9) then FP (0.8): recall tops
    out at 1/2 with precision 1, so COCO's 101-point interpolated precision is 1 at recall
    0.00..0.50 (51 points) and 0 above: AP = 51/101.
    """
    n = num_thresholds_matched
    return (n * 1.0 + (10 - n) * 51 / 101) / 10


def test_one_shifted_box_gives_the_hand_computed_ap(tmp_path):
    # image 3's dog gt is [0, 0, 30, 30] (XYWH); predict it 6 px to the right:
    # IoU = 24*30 / (30*30 + 6*30) = 720 / 1080 = 2/3, which passes 0.50, 0.55, 0.60, 0.65.
    name, _ = _write_dataset(tmp_path)
    outputs = _perfect_outputs()
    outputs[3] = _instances([[6.0, 0.0, 30.0, 30.0]], [1], [0.8])
    res = _run(COCOEvaluator(name, output_dir=None, distributed=False), outputs)["bbox"]
    dog = _dog_ap(4)
    assert res["AP-dog"] == pytest.approx(100 * dog)
    assert res["AP-cat"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx(100 * (1 + dog) / 2)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(100 * (1 + 51 / 101) / 2)


def test_fast_and_official_cocoeval_agree(tmp_path):
    name, _ = _write_dataset(tmp_path)
    rng = np.random.RandomState(0)
    outputs = {}
    for image_id, objs in GT.items():
        boxes, classes, scores = [], [], []
        for cat, box in objs:
            for _ in range(3):
                boxes.append(list(np.array(box) + rng.normal(0, 6, 4).clip(-5, 5)))
                classes.append(TO_CONTIGUOUS[cat] if rng.rand() < 0.8 else 1 - TO_CONTIGUOUS[cat])
                scores.append(float(rng.rand()))
        outputs[image_id] = _instances(boxes, classes, scores)
    fast = _run(COCOEvaluator(name, distributed=False, use_fast_impl=True), outputs)["bbox"]
    official = _run(COCOEvaluator(name, distributed=False, use_fast_impl=False), outputs)["bbox"]
    assert fast.keys() == official.keys()
    for key in fast:
        np.testing.assert_allclose(fast[key], official[key], rtol=0, atol=1e-9, err_msg=key)
    assert 0 < official["AP"] < 100  # the case is not trivial


def test_segm_with_rle_masks(tmp_path):
    name, path = _write_dataset(tmp_path, with_segm=True)
    coco = COCO(path)
    outputs = {}
    for image_id, objs in GT.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns]).astype(bool))
        outputs[image_id] = _instances(
            [a["bbox"] for a in anns],
            [TO_CONTIGUOUS[a["category_id"]] for a in anns],
            [0.9] * len(anns),
            masks=masks,
        )
    # image 3: the dog mask loses every column from x=20 on (its score drops to 0.8)
    gt_mask = outputs[3].pred_masks[0].clone()
    outputs[3].pred_masks[0, :, 20:] = False
    outputs[3].scores[0] = 0.8
    pred_mask = outputs[3].pred_masks[0]
    iou = (gt_mask & pred_mask).sum().item() / (gt_mask | pred_mask).sum().item()
    matched = sum(iou >= t for t in np.linspace(0.5, 0.95, 10))
    assert 0 < matched < 10
    results = _run(COCOEvaluator(name, distributed=False), outputs)
    assert set(results) == {"bbox", "segm"}
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    segm = results["segm"]
    assert segm["AP-cat"] == pytest.approx(100.0)
    assert segm["AP-dog"] == pytest.approx(100 * _dog_ap(matched))


def test_instances_to_coco_json_fields():
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    inst = _instances([[3.0, 2.0, 4.0, 3.0]], [1], [0.5], masks=masks)
    (result,) = instances_to_coco_json(inst, 42)
    assert result["image_id"] == 42 and result["category_id"] == 1
    assert result["bbox"] == pytest.approx([3.0, 2.0, 4.0, 3.0])
    assert result["score"] == pytest.approx(0.5)
    assert isinstance(result["segmentation"]["counts"], str)
    decoded = mask_util.decode(
        {**result["segmentation"], "counts": result["segmentation"]["counts"].encode()}
    )
    assert np.array_equal(decoded.astype(bool), masks[0].numpy())
    assert instances_to_coco_json(_instances([], [], []), 1) == []


def test_dataset_without_json_is_converted(tmp_path):
    name = f"eval_dicts_{uuid.uuid4().hex}"
    records = [
        {
            "file_name": f"{i}.jpg",
            "image_id": i,
            "height": H,
            "width": W,
            "annotations": [
                {
                    "bbox": box,
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": TO_CONTIGUOUS[c],
                    "iscrowd": 0,
                }
                for c, box in objs
            ],
        }
        for i, objs in GT.items()
    ]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["cat", "dog"])
    with pytest.raises(ValueError, match="output_dir"):
        COCOEvaluator(name)
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path), distributed=False)
    assert os.path.isfile(tmp_path / f"{name}_coco_format.json")
    outputs = {
        i: _instances([b for _, b in objs], [TO_CONTIGUOUS[c] for c, _ in objs], [0.9] * len(objs))
        for i, objs in GT.items()
    }
    assert _run(evaluator, outputs)["bbox"]["AP"] == pytest.approx(100.0)


def test_no_predictions_and_empty_instances(tmp_path):
    name, _ = _write_dataset(tmp_path)
    evaluator = COCOEvaluator(name, distributed=False)
    evaluator.reset()
    assert evaluator.evaluate() == {}
    results = _run(evaluator, {1: _instances([], [], [])})
    assert all(np.isnan(v) for v in results["bbox"].values())


def test_proposals_are_scored_by_average_recall(tmp_path):
    name, _ = _write_dataset(tmp_path)
    evaluator = COCOEvaluator(name, distributed=False, output_dir=str(tmp_path / "p"))
    evaluator.reset()
    for image_id, objs in GT.items():
        props = Instances((H, W))
        xyxy = BoxMode.convert(
            torch.tensor([b for _, b in objs]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS
        )
        props.proposal_boxes = Boxes(xyxy)
        props.objectness_logits = torch.ones(len(objs))
        evaluator.process([{"image_id": image_id}], [{"proposals": props}])
    res = evaluator.evaluate()["box_proposals"]
    assert res["AR@100"] == pytest.approx(100.0) and res["AR@1000"] == pytest.approx(100.0)
    assert os.path.isfile(tmp_path / "p" / "box_proposals.pkl")


def test_unknown_task_is_rejected(tmp_path):
    name, _ = _write_dataset(tmp_path)
    with pytest.raises(ValueError, match="bboxes"):
        COCOEvaluator(name, tasks=("bboxes",))


def _greedy_reference(overlaps):
    """Slow reference: per step, the best-covered gt (column maxima), then its best proposal."""
    overlaps = overlaps.clone()
    out = torch.zeros(overlaps.shape[1])
    for step in range(min(overlaps.shape)):
        best_gt, best_val, best_prop = None, None, None
        for g in range(overlaps.shape[1]):
            for p in range(overlaps.shape[0]):
                v = overlaps[p, g].item()
                if best_val is None or v > best_val:
                    best_gt, best_val, best_prop = g, v, p
        out[step] = best_val
        overlaps[best_prop, :] = -1
        overlaps[:, best_gt] = -1
    return out


@pytest.mark.parametrize("shape", [(5, 3), (2, 4), (6, 6)])
def test_greedy_gt_coverage_matches_a_reference(shape):
    from sephnet.d2.evaluation.coco_evaluation import _greedy_gt_coverage

    for trial in range(5):
        overlaps = torch.rand(shape)
        if trial == 0:
            overlaps = (overlaps * 4).round() / 4  # many ties
        assert torch.equal(_greedy_gt_coverage(overlaps), _greedy_reference(overlaps))


def test_proposal_average_recall_by_hand(tmp_path):
    """Image 3's dog [0, 0, 30, 30] gets one proposal shifted 6 px (IoU 2/3, which clears 4
    of the 10 thresholds); every other gt gets an exact proposal. 4 gt boxes in all:
    recall is 1 at the first 4 thresholds and 3/4 at the other 6, so
    AR = (4 + 6 * 0.75) / 10 = 0.85. All gt are medium or small except image 1's cat
    (100 x 100 = 10000 > 96^2: large), which is exact: ARl = 100."""
    name, _ = _write_dataset(tmp_path)
    evaluator = COCOEvaluator(name, distributed=False)
    evaluator.reset()
    for image_id, objs in GT.items():
        boxes = [list(b) for _, b in objs]
        if image_id == 3:
            boxes[0][0] += 6.0
        props = Instances((H, W))
        props.proposal_boxes = Boxes(
            BoxMode.convert(torch.tensor(boxes), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        )
        props.objectness_logits = torch.ones(len(boxes))
        evaluator.process([{"image_id": image_id}], [{"proposals": props}])
    res = evaluator.evaluate()["box_proposals"]
    assert res["AR@100"] == pytest.approx(85.0, abs=1e-4)
    assert res["ARl@100"] == pytest.approx(100.0)


def test_instances_to_coco_json_shifts_keypoints_without_touching_the_input():
    inst = _instances([[0.0, 0.0, 10.0, 10.0]], [0], [0.7])
    inst.pred_keypoints = torch.tensor([[[2.5, 3.5, 0.9], [4.0, 1.0, 0.1]]])
    (result,) = instances_to_coco_json(inst, 5)
    assert result["keypoints"] == pytest.approx([2.0, 3.0, 0.9, 3.5, 0.5, 0.1])
    assert inst.pred_keypoints[0, 0, 0].item() == 2.5


def test_evaluate_twice_gives_the_same_results(tmp_path):
    name, _ = _write_dataset(tmp_path)
    evaluator = COCOEvaluator(name, distributed=False)
    first = _run(evaluator, _perfect_outputs())
    assert evaluator.evaluate() == first


@pytest.mark.parametrize("fast", [True, False])
def test_exact_keypoints_give_keypoint_ap_100(tmp_path, fast):
    data = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 10, 60, 50],
                "area": 3000,
                "iscrowd": 0,
                "num_keypoints": 3,
                "keypoints": [20, 20, 2, 40, 40, 2, 60, 30, 2],
            }
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}],
    }
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(data))
    name = f"eval_kp_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(
        json_file=str(path), thing_classes=["person"], thing_dataset_id_to_contiguous_id={1: 0}
    )
    inst = _instances([[10.0, 10.0, 60.0, 50.0]], [0], [0.9])
    # model coordinates are continuous: pixel index + 0.5
    inst.pred_keypoints = torch.tensor([[[20.5, 20.5, 1.0], [40.5, 40.5, 1.0], [60.5, 30.5, 1.0]]])
    evaluator = COCOEvaluator(
        name, distributed=False, kpt_oks_sigmas=[0.1, 0.1, 0.1], use_fast_impl=fast
    )
    results = _run(evaluator, {1: inst})
    assert list(results["keypoints"]) == ["AP", "AP50", "AP75", "APm", "APl"]
    assert results["keypoints"]["AP"] == pytest.approx(100.0)
    assert np.isnan(results["keypoints"]["APl"])  # no large person
    with pytest.raises(ValueError, match="KEYPOINT_OKS_SIGMAS is 2"):
        _run(COCOEvaluator(name, distributed=False, kpt_oks_sigmas=[0.1, 0.1]), {1: inst})
