"""load_coco_json / convert_to_coco_dict / register_coco_instances on a hand-written json."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from sephnet.d2.data.catalog import DatasetCatalog, MetadataCatalog
from sephnet.d2.data.datasets.coco import (
    convert_to_coco_dict,
    convert_to_coco_json,
    load_coco_json,
    register_coco_instances,
)
from sephnet.d2.structures import BoxMode

H, W = 20, 30


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with zeros (COCO's uncompressed RLE)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[5:9, 10:16] = 1
    return m


def _coco_json() -> dict:
    compressed = mask_util.encode(np.asfortranarray(_mask()))
    compressed["counts"] = compressed["counts"].decode("ascii")
    return {
        "images": [
            {"id": 7, "file_name": "b.jpg", "height": H, "width": W},
            {"id": 3, "file_name": "a.jpg", "height": H, "width": W},
            {"id": 9, "file_name": "empty.jpg", "height": 10, "width": 12},
        ],
        "categories": [{"id": 12, "name": "zebra"}, {"id": 5, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0, "area": 12,
             "segmentation": [[1, 2, 4, 2, 4, 6, 1, 6], [0, 0, 1, 1]]},
            {"id": 2, "image_id": 3, "category_id": 12, "bbox": [10, 5, 6, 4], "iscrowd": 1, "area": 24,
             "segmentation": _uncompressed_rle(_mask())},
            {"id": 3, "image_id": 7, "category_id": 12, "bbox": [10, 5, 6, 4], "iscrowd": 0, "area": 24,
             "segmentation": compressed, "extra": "kept"},
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [0, 0, 2, 2], "iscrowd": 0, "area": 4,
             "segmentation": [[0, 0, 1, 1]]},
        ],
    }


def _write(tmp_path, content, name="instances.json") -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        json.dump(content, f)
    return path


@pytest.fixture
def dataset_name():
    name = "_test_coco_tiny"
    yield name
    DatasetCatalog.pop(name, None)
    MetadataCatalog.pop(name, None)


def test_load_coco_json_records_and_metadata(tmp_path, dataset_name):
    json_file = _write(tmp_path, _coco_json())
    dicts = load_coco_json(json_file, "/imgs", dataset_name, extra_annotation_keys=["extra"])

    assert [d["image_id"] for d in dicts] == [3, 7, 9]  # sorted by id
    assert [d["file_name"] for d in dicts] == ["/imgs/a.jpg", "/imgs/b.jpg", "/imgs/empty.jpg"]
    assert (dicts[2]["height"], dicts[2]["width"], dicts[2]["annotations"]) == (10, 12, [])

    meta = MetadataCatalog.get(dataset_name)
    assert meta.thing_classes == ["cat", "zebra"]  # sorted by category id 5 < 12
    assert meta.thing_dataset_id_to_contiguous_id == {5: 0, 12: 1}

    polygon, crowd = dicts[0]["annotations"]
    assert polygon["category_id"] == 0 and crowd["category_id"] == 1
    assert polygon["bbox"] == [1, 2, 3, 4] and polygon["bbox_mode"] == BoxMode.XYWH_ABS
    assert polygon["iscrowd"] == 0
    # the 2-point polygon is dropped, the valid one kept
    assert polygon["segmentation"] == [[1, 2, 4, 2, 4, 6, 1, 6]]
    assert crowd["iscrowd"] == 1
    # uncompressed RLE -> compressed RLE with the same mask
    assert not isinstance(crowd["segmentation"]["counts"], list)
    np.testing.assert_array_equal(mask_util.decode(crowd["segmentation"]), _mask())

    (rle_obj,) = dicts[1]["annotations"]  # the instance with only an invalid polygon is dropped
    assert rle_obj["extra"] == "kept"
    np.testing.assert_array_equal(mask_util.decode(rle_obj["segmentation"]), _mask())
    assert "area" not in rle_obj and "id" not in rle_obj


def test_load_without_dataset_name_keeps_raw_ids(tmp_path):
    dicts = load_coco_json(_write(tmp_path, _coco_json()), "/imgs")
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {5, 12}


def test_unknown_category_id_is_a_clear_key_error(tmp_path, dataset_name):
    content = _coco_json()
    content["annotations"][0]["category_id"] = 99
    with pytest.raises(KeyError, match="category_id=99"):
        load_coco_json(_write(tmp_path, content), "/imgs", dataset_name)


def test_duplicate_annotation_ids_are_rejected(tmp_path):
    content = _coco_json()
    content["annotations"][1]["id"] = 1
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match="not unique") as info:
        load_coco_json(path, "/imgs")
    assert path in str(info.value)


def test_register_and_convert_round_trip(tmp_path, dataset_name):
    json_file = _write(tmp_path, _coco_json())
    register_coco_instances(dataset_name, {"extra_meta": 1}, json_file, "/imgs")
    meta = MetadataCatalog.get(dataset_name)
    assert (meta.json_file, meta.image_root, meta.evaluator_type, meta.extra_meta) == (
        json_file, "/imgs", "coco", 1
    )

    coco = convert_to_coco_dict(dataset_name)
    assert sorted((c["id"], c["name"]) for c in coco["categories"]) == [(5, "cat"), (12, "zebra")]
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in coco["images"]] == [
        (3, "/imgs/a.jpg", H, W), (7, "/imgs/b.jpg", H, W), (9, "/imgs/empty.jpg", 10, 12)
    ]
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3]
    assert [(a["image_id"], a["category_id"], a["iscrowd"]) for a in anns] == [
        (3, 5, 0), (3, 12, 1), (7, 12, 0)
    ]
    assert anns[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]
    assert anns[0]["area"] == pytest.approx(3 * 4)  # polygon area
    assert anns[2]["area"] == pytest.approx(24)  # RLE pixel count
    assert isinstance(anns[2]["segmentation"]["counts"], str)  # json-serialisable
    np.testing.assert_array_equal(mask_util.decode(anns[1]["segmentation"]), _mask())

    # and the written json loads back to the same dataset dicts
    out = os.path.join(str(tmp_path), "cache", "converted.json")
    convert_to_coco_json(dataset_name, out)
    again = load_coco_json(out, "")
    original = DatasetCatalog.get(dataset_name)
    for a, b in zip(again, original):
        assert a["image_id"] == b["image_id"] and a["file_name"] == b["file_name"]
        assert [x["bbox"] for x in a["annotations"]] == [list(map(float, x["bbox"])) for x in b["annotations"]]
        assert [x["category_id"] for x in a["annotations"]] == [
            {0: 5, 1: 12}[x["category_id"]] for x in b["annotations"]
        ]


def test_convert_box_only_dataset_uses_box_area(dataset_name):
    DatasetCatalog.register(
        dataset_name,
        lambda: [{"file_name": "x.jpg", "height": 10, "width": 10, "image_id": 1, "annotations": [
            {"bbox": np.array([1.0, 1.0, 4.0, 5.0]), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
        ]}],
    )
    MetadataCatalog.get(dataset_name).thing_classes = ["thing"]
    coco = convert_to_coco_dict(dataset_name)
    assert coco["categories"] == [{"id": 0, "name": "thing"}]
    (ann,) = coco["annotations"]
    assert ann["bbox"] == [1.0, 1.0, 3.0, 4.0]
    assert ann["area"] == pytest.approx(12.0)


def test_builtin_coco_splits_are_registered():
    import sephnet.d2.data.datasets  # noqa: F401  (registers)

    assert {"coco_2017_train", "coco_2017_val"} <= set(DatasetCatalog.list())
    meta = MetadataCatalog.get("coco_2017_val")
    assert len(meta.thing_classes) == 80 and meta.thing_classes[0] == "person"
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79
    assert meta.thing_dataset_id_to_contiguous_id[1] == 0
    assert meta.evaluator_type == "coco"
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    assert meta.json_file == os.path.join(root, "coco/annotations/instances_val2017.json")
    assert meta.image_root == os.path.join(root, "coco/val2017")
    assert len(meta.thing_colors) == 80
