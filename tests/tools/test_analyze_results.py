"""analyze_results: crafted predictions whose errors are known give the expected breakdown.

Ground truth (XYWH): image 1 has A (class 1) [10,10,20,20], B (class 2) [50,50,20,20],
C (class 1) [10,60,20,20]; image 2 has D (class 2) [0,0,30,30], E (class 1) [60,60,20,20].
Detections, one of each error type:

    d7 img1 c2 on B, 0.95   true positive
    d1 img1 c1 on A, 0.90   true positive
    d2 img1 c1 [11,10,20,20] 0.80   duplicate of A (IoU 0.905, A taken)
    d3 img2 c1 on D, 0.70   classification (IoU 1 with class-2 D)
    d4 img1 c1 [10,70,20,20] 0.60   localization (IoU 1/3 with C)
    d5 img2 c1 [10,10,30,30] 0.50   both (IoU 0.286 with class-2 D, nothing of class 1)
    d6 img2 c2 [85,5,10,10]  0.30   background
    E is missed (no detection targets it).

COCO's AP interpolates precision at 101 recall points: a class whose detections reach recall r
at precision 1 and nothing after scores (#points <= r) / 101.
"""
import json

import numpy as np
import pytest

from sephnet.tools.analyze_results import (
    ap50,
    classify_errors,
    coco_from_dict,
    confusion_matrix,
    error_breakdown,
    load_results,
    main,
)


def _gt():
    boxes = [(1, 1, [10, 10, 20, 20]), (1, 2, [50, 50, 20, 20]), (1, 1, [10, 60, 20, 20]),
             (2, 2, [0, 0, 30, 30]), (2, 1, [60, 60, 20, 20])]
    return coco_from_dict({
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
        "annotations": [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0} for i, (im, c, b) in enumerate(boxes)],
    })


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


DETS = [
    _det(1, 2, [50, 50, 20, 20], 0.95),
    _det(1, 1, [10, 10, 20, 20], 0.90),
    _det(1, 1, [11, 10, 20, 20], 0.80),
    _det(2, 1, [0, 0, 30, 30], 0.70),
    _det(1, 1, [10, 70, 20, 20], 0.60),
    _det(2, 1, [10, 10, 30, 30], 0.50),
    _det(2, 2, [85, 5, 10, 10], 0.30),
]


def points(recall):
    """COCO's interpolated AP (percent) of a class found up to ``recall`` at precision 1."""
    return float(np.sum(np.linspace(0, 1, 101) <= recall + 1e-12)) / 101 * 100


def test_each_detection_gets_its_error_type_and_fix_target():
    errors, missed = classify_errors(_gt(), DETS)
    assert errors == [None, None, ("duplicate", None), ("classification", 4),
                      ("localization", 3), ("both", None), ("background", None)]
    assert missed == [5]  # E


def test_breakdown_counts_and_ap_gained_by_each_fix_equal_hand_values():
    result = error_breakdown(_gt(), DETS)
    base = (points(1 / 3) + points(1 / 2)) / 2  # class 1: A of A,C,E; class 2: B of B,D
    assert result["ap50"] == pytest.approx(base)
    assert result["counts"] == {"classification": 1, "localization": 1, "both": 1,
                                "duplicate": 1, "background": 1, "missed": 1}
    dap = result["dap"]
    # d3 relabelled to class 2 finds D after B with no false positive between: class 2 -> 100
    assert dap["classification"] == pytest.approx((points(1 / 3) + 100) / 2 - base)
    # d4 moved onto C: class 1 reaches 1/3 at precision 1, then 2/3 at precision 2/4
    loc_class1 = (34 + 33 * 0.5) / 101 * 100
    assert dap["localization"] == pytest.approx((loc_class1 + points(1 / 2)) / 2 - base)
    # dropping E: class 1 has A of A,C
    assert dap["missed"] == pytest.approx((points(1 / 2) + points(1 / 2)) / 2 - base)
    # these false positives all rank below the last true positive of their class
    assert dap["duplicate"] == dap["both"] == dap["background"] == pytest.approx(0.0)


def test_a_false_positive_above_the_true_positive_costs_half_the_ap():
    gt = _gt()
    dets = [_det(1, 1, [80, 0, 10, 10], 0.9), _det(1, 1, [10, 10, 20, 20], 0.8)]
    only_a = coco_from_dict(dict(gt.dataset, annotations=gt.dataset["annotations"][:1],
                                 categories=gt.dataset["categories"][:1]))
    result = error_breakdown(only_a, dets)
    assert result["ap50"] == pytest.approx(50.0)
    assert result["dap"]["background"] == pytest.approx(50.0)
    assert ap50(only_a, dets[1:]) == pytest.approx(100.0)


def test_confusion_matrix_rows_are_truth_columns_are_predictions():
    matrix, names = confusion_matrix(_gt(), DETS, score_threshold=0.0)
    assert names == ["one", "two", "background / missed"]
    np.testing.assert_array_equal(matrix, [[1, 0, 2], [1, 1, 0], [3, 1, 0]])
    # a threshold above every score: all ground truth missed, no predictions
    matrix, _ = confusion_matrix(_gt(), DETS, score_threshold=0.99)
    np.testing.assert_array_equal(matrix, [[0, 0, 3], [0, 0, 2], [0, 0, 0]])


def test_results_naming_unknown_images_or_classes_are_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_det(9, 1, [0, 0, 1, 1], 0.5)]))
    with pytest.raises(ValueError, match="image_id=9, which the dataset does not have"):
        load_results(str(path), _gt())
    path.write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        load_results(str(path), _gt())


def test_cli_writes_tables_and_charts(tmp_path, monkeypatch, capsys):
    import sephnet.tools.analyze_results as tool

    monkeypatch.setattr(tool, "_dataset_coco", lambda name: _gt())
    results = tmp_path / "results.json"
    results.write_text(json.dumps(DETS))
    assert main(["--dataset", "x", "--results", str(results), "--output", str(tmp_path / "o")]) == 0
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["confusion_matrix.png", "errors.json", "errors.png", "per_class_ap.md"]
    assert json.loads((tmp_path / "o" / "errors.json").read_text())["counts"]["missed"] == 1
    assert "classification" in capsys.readouterr().out
