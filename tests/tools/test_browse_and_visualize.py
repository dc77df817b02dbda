"""browse_dataset and visualize_json_results draw on the tiny dataset where the objects are."""
import json

import cv2
import numpy as np
import pytest

from sephnet.tools import browse_dataset, visualize_json_results

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"
ORIGINAL_GREY = 40  # background of the tiny images; the square spans x 12-43, y 10-39


def _changed(drawn, y, x):
    return not np.all(drawn[y, x] == ORIGINAL_GREY)


@pytest.mark.parametrize("source", ["annotation", "dataloader"])
def test_ground_truth_is_drawn_on_the_object_only(tiny_coco, tmp_path, source):
    out = tmp_path / source
    assert browse_dataset.main(["--config-file", QUICKSTART, "--source", source, "--num", "2",
                                "--output", str(out), "--opts", *tiny_coco]) == 0
    files = sorted(out.iterdir())
    assert len(files) == 2
    for path in files:
        drawn = cv2.imread(str(path))
        assert drawn.shape == (64, 64, 3)
        assert _changed(drawn, 25, 28)  # inside the square: the mask fill
        assert not _changed(drawn, 60, 2) and not _changed(drawn, 2, 60)  # far corners


def test_predictions_are_drawn_left_of_the_ground_truth(tiny_coco, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([
        {"image_id": 1, "category_id": 7, "bbox": [12, 10, 32, 30], "score": 0.9},
        {"image_id": 1, "category_id": 7, "bbox": [50, 0, 10, 10], "score": 0.1},  # below 0.5
    ]))
    out = tmp_path / "vis"
    assert visualize_json_results.main(["--input", str(results), "--dataset", "tools_tiny",
                                        "--output", str(out)]) == 0
    drawn = {p.name: cv2.imread(str(p)) for p in out.iterdir()}
    assert sorted(drawn) == ["0.png", "1.png"]  # image 2 has ground truth, no predictions
    first = drawn["0.png"]
    assert first.shape == (64, 128, 3)
    left, right = first[:, :64], first[:, 64:]
    assert _changed(left, 10, 28) and _changed(right, 10, 28)  # the box's top edge, both sides
    assert not _changed(left, 0, 55) and not _changed(left, 5, 50)  # low-score box: not drawn
    # no predictions on image 2: its left half is the untouched image (grey and the square)
    assert set(np.unique(drawn["1.png"][:, :64]).tolist()) == {ORIGINAL_GREY, 200}


def test_results_with_unknown_categories_or_bad_files_fail_in_one_line(tiny_coco, tmp_path,
                                                                       capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5],
                                    "score": 0.9}]))
    args = ["--dataset", "tools_tiny", "--output", str(tmp_path / "o")]
    assert visualize_json_results.main(["--input", str(results), *args]) == 1
    assert "category ids [3] that the dataset does not have (it has [7])" in capsys.readouterr().err
    results.write_text("[1, 2]")
    assert visualize_json_results.main(["--input", str(results), *args]) == 1
    assert "item 0 is not a detection" in capsys.readouterr().err
