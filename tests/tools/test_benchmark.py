"""benchmark: every task runs on a tiny registered dataset and reports sane figures."""
import json

import cv2
import numpy as np
import pytest

from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.tools.benchmark import benchmark, main, time_iterations
from sephnet.tools.config_loading import load_config

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Two 64x64 images with one square each, registered as 'bench_tiny'."""
    root = tmp_path_factory.mktemp("bench")
    images, annotations = [], []
    for i in range(2):
        image = np.full((64, 64, 3), 40, np.uint8)
        image[10 + i:40 + i, 12:44] = 200
        cv2.imwrite(str(root / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        poly = [12, 10 + i, 44, 10 + i, 44, 40 + i, 12, 40 + i]
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [12, 10 + i, 32, 30], "area": 960, "segmentation": [poly]})
    (root / "ann.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "square"}]}))
    if "bench_tiny" not in DatasetCatalog.list():
        register_coco_instances("bench_tiny", {}, str(root / "ann.json"), str(root))
    return ["DATASETS.TRAIN", "('bench_tiny',)", "DATASETS.TEST", "('bench_tiny',)",
            "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MIN_SIZE_TEST", "64", "DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.parametrize("task, images_per_iter", [("train", 2), ("eval", 1), ("data", 2)])
def test_each_task_times_iterations_and_reports_memory(tiny_dataset, task, images_per_iter):
    result = benchmark(load_config(QUICKSTART, tiny_dataset), task, num_iter=2, warmup=1)
    assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["images_per_s"] == pytest.approx(images_per_iter / result["median_s"])
    assert result["peak_rss_mib"] > 50  # torch alone takes more


def test_time_iterations_runs_warmup_untimed_and_rates_at_the_median():
    calls = []

    def step():
        calls.append(1)
        return 4

    result = time_iterations(step, num_iter=3, warmup=2)
    assert len(calls) == 5
    assert result["images_per_s"] == pytest.approx(4 / result["median_s"])
    with pytest.raises(ValueError, match="--num-iter must be >= 1"):
        time_iterations(step, num_iter=0, warmup=0)


def test_cli_prints_machine_timing_and_memory(tiny_dataset, capsys):
    assert main(["--config-file", QUICKSTART, "--task", "data", "--num-iter", "2",
                 "--opts", *tiny_dataset]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = lines[[i for i, line in enumerate(lines) if line.startswith("machine: ")][0]:]
    assert "torch" in report[0]
    assert report[1].startswith("data: ") and "images/s" in report[1]
    assert report[2].startswith("memory: peak RSS ")
