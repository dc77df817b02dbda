"""COCO instances statistics, counted by hand on a crafted file."""
import json

import pytest

from sephnet.data.statistics import dataset_statistics, main


def test_statistics_count_classes_objects_and_sizes_by_hand():
    coco = {
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "hexagon"}],
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "area": 50.0, "bbox": [0, 0, 10, 5]},
            {"image_id": 1, "category_id": 2, "area": 2000.0, "bbox": [0, 0, 40, 50]},
            {"image_id": 2, "category_id": 2, "area": 10000.0, "bbox": [0, 0, 100, 100]},
        ],
    }
    stats = dataset_statistics(coco)
    assert stats["images"] == 3 and stats["objects"] == 3
    assert stats["per_class"] == {"circle": 1, "hexagon": 2}
    assert stats["objects_per_image"] == {"min": 0, "mean": 1.0, "max": 2, "histogram": {0: 1, 1: 1, 2: 1}}
    assert stats["area_histogram"] == {"0-64": 1, "64-256": 0, "256-1024": 0, "1024-4096": 1,
                                       "4096-9216": 0, "9216-inf": 1}
    assert stats["small_fraction"] == pytest.approx(1 / 3, abs=1e-3)
    assert stats["box_aspect"]["p50"] == 1.0  # aspects 2.0, 0.8, 1.0


def test_cli_prints_each_files_statistics(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({
        "categories": [{"id": 1, "name": "a"}], "images": [{"id": 1}],
        "annotations": [{"image_id": 1, "category_id": 1, "area": 10.0, "bbox": [0, 0, 2, 5]}],
    }))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(path)) and json.loads(out[len(str(path)):])["per_class"] == {"a": 1}
