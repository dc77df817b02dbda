"""The bad-input catalogue: each user mistake raises (or, where detectron2 skips, warns with a
count) with a message naming the file / key / value and what was expected.

Each test asserts the parts of the message a user needs; the exact texts are listed in the
reliability report of issue 8.
"""
import copy
import json
import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

import sephnet
from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.config import get_cfg
from sephnet.d2.data import DatasetCatalog, get_detection_dataset_dicts
from sephnet.d2.data import detection_utils as utils
from sephnet.d2.data.datasets import load_coco_json
from sephnet.d2.engine import launch
from sephnet.d2.modeling import build_model
from sephnet.data import ShapesParams, generate_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")


def _cfg():
    cfg = get_cfg()
    sephnet.add_sephnet_config(cfg)
    return cfg


# --- config -------------------------------------------------------------------------------

def test_config_typo_on_command_line_suggests_the_key():
    with pytest.raises(KeyError) as info:
        _cfg().merge_from_list(["SOLVER.BASE_LRR", "0.1"])
    assert str(info.value.args[0]) == (
        "Non-existent config key: SOLVER.BASE_LRR. Did you mean SOLVER.BASE_LR or "
        "SOLVER.BIAS_LR_FACTOR?"
    )


def test_config_typo_in_file_names_the_file_and_suggests(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSE: 3\n")
    with pytest.raises(KeyError) as info:
        _cfg().merge_from_file(str(path))
    message = str(info.value.args[0])
    assert "MODEL.ROI_HEADS.NUM_CLASSE" in message
    assert "Did you mean MODEL.ROI_HEADS.NUM_CLASSES" in message
    assert str(path) in message


def test_config_wrong_type_names_key_value_and_expected_type(tmp_path):
    with pytest.raises(ValueError, match=r"<class 'float'>.*abc.*SOLVER\.BASE_LR"):
        _cfg().merge_from_list(["SOLVER.BASE_LR", "abc"])
    path = tmp_path / "type.yaml"
    path.write_text("SOLVER:\n  STEPS: 5\n")
    with pytest.raises(ValueError, match=r"<class 'tuple'>.*SOLVER\.STEPS.*type\.yaml"):
        _cfg().merge_from_file(str(path))


@pytest.mark.parametrize("key, registry, valid", [
    ("MODEL.META_ARCHITECTURE", "META_ARCH", "GeneralizedRCNN"),
    ("MODEL.BACKBONE.NAME", "BACKBONE", "build_resnet_fpn_backbone"),
    ("MODEL.PROPOSAL_GENERATOR.NAME", "PROPOSAL_GENERATOR", "RPN"),
    ("MODEL.ROI_HEADS.NAME", "ROI_HEADS", "StandardROIHeads"),
    ("MODEL.ROI_BOX_HEAD.NAME", "ROI_BOX_HEAD", "FastRCNNConvFCHead"),
    ("MODEL.ROI_MASK_HEAD.NAME", "ROI_MASK_HEAD", "MaskRCNNConvUpsampleHead"),
])
def test_unknown_registry_name_lists_valid_names_and_the_key(key, registry, valid):
    cfg = _cfg()
    cfg.merge_from_file(QUICKSTART)
    cfg.merge_from_list([key, "Nope"])
    with pytest.raises(KeyError) as info:
        build_model(cfg)
    message = str(info.value.args[0])
    assert f"No object named 'Nope' found in '{registry}' registry (config key {key} = 'Nope')" \
        in message
    assert valid in message.split("Registered names:")[1]


def test_inconsistent_keys_are_named():
    cfg = _cfg()
    cfg.merge_from_file(QUICKSTART)
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    expected = r"MODEL\.RESNETS\.RES2_OUT_CHANNELS = 64 for R18/R34, got 256"
    with pytest.raises(ValueError, match=expected):
        build_model(cfg)
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p9"]
    with pytest.raises(KeyError) as info:
        build_model(cfg)
    assert str(info.value) == (
        "MODEL.ROI_HEADS.IN_FEATURES = ['p2', 'p9'] names 'p9', which the backbone does not "
        "output; it outputs ['p2', 'p3', 'p4', 'p5', 'p6']."
    )
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2"]
    cfg.MODEL.RPN.IN_FEATURES = ["p9"]
    with pytest.raises(KeyError, match=r"MODEL\.RPN\.IN_FEATURES names \['p9'\]"):
        build_model(cfg)


# --- datasets and images ------------------------------------------------------------------

def test_unregistered_dataset_lists_registered_ones():
    # the backend's catalog: the one importing sephnet registered shapes_train into
    from sephnet.backend import DatasetCatalog as BackendCatalog

    expected = r"Dataset 'no_such_set' is not registered! Available datasets are: .*shapes_train"
    with pytest.raises(KeyError, match=expected):
        BackendCatalog.get("no_such_set")


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Image file '.*none\.png' does not exist\."):
        utils.read_image(str(tmp_path / "none.png"), format="BGR")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match=r"Cannot read image file '.*bad\.png'"):
        utils.read_image(str(bad), format="BGR")


def test_image_size_disagreeing_with_json_names_image_and_sizes():
    record = {"file_name": "img_7.png", "height": 10, "width": 12}
    with pytest.raises(ValueError) as info:
        utils.check_image_size(record, np.zeros((11, 12, 3), dtype=np.uint8))
    assert str(info.value) == (
        "Mismatched image shape for image img_7.png, got (width, height)=(12, 11), expect "
        "(12, 10). Please check the width/height in your annotation."
    )


@pytest.fixture(scope="module")
def shapes_json(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    generate_shapes(root, ShapesParams(num_train=3, num_val=1, image_sizes=((64, 64),),
                                       min_extent=12, max_extent=30, max_objects=2))
    with open(os.path.join(root, "annotations", "instances_train.json")) as f:
        return root, json.load(f)


def _variant(tmp_path, shapes_json, mutate):
    root, base = shapes_json
    data = copy.deepcopy(base)
    mutate(data)
    path = str(tmp_path / "variant.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path, os.path.join(root, "train")


def _set_first(key, index, value):
    def mutate(data):
        data["annotations"][0][key][index] = value
    return mutate


def test_unknown_category_names_json_id_and_valid_ids(tmp_path, shapes_json):
    def mutate(data):
        data["annotations"][0]["category_id"] = 99
    path, images = _variant(tmp_path, shapes_json, mutate)
    with pytest.raises(KeyError) as info:
        load_coco_json(path, images, "bad_input_unknown_category")
    assert str(info.value.args[0]) == (
        f"Encountered category_id=99 in '{path}' but this id does not exist in 'categories' "
        "of the json file (ids: [1, 2, 3])."
    )


@pytest.mark.parametrize("index, value, expected", [
    (2, -5.0, "expected width and height >= 0"),
    (3, -0.5, "expected width and height >= 0"),
    (0, float("nan"), "expected 4 finite numbers [x, y, width, height]"),
    (1, float("inf"), "expected 4 finite numbers [x, y, width, height]"),
])
def test_negative_and_non_finite_boxes_name_the_annotation(tmp_path, shapes_json, index, value,
                                                          expected):
    path, images = _variant(tmp_path, shapes_json, _set_first("bbox", index, value))
    ann_id = shapes_json[1]["annotations"][0]["id"]
    with pytest.raises(ValueError) as info:
        load_coco_json(path, images, "bad_input_box")
    message = str(info.value)
    assert message.startswith(f"Annotation {ann_id} of image ")
    assert f"in '{path}' has bbox=" in message
    assert expected in message


def test_zero_area_boxes_are_kept_and_counted(tmp_path, shapes_json, caplog):
    def mutate(data):
        data["annotations"][0]["bbox"][2] = 0
        data["annotations"][1]["bbox"][3] = 0
    path, images = _variant(tmp_path, shapes_json, mutate)
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(path, images, "bad_input_zero_area")
    assert sum(len(d["annotations"]) for d in dicts) == len(shapes_json[1]["annotations"])
    assert f"2 annotations in '{path}' have a zero-width or zero-height bbox" in caplog.text


def test_polygons_with_fewer_than_3_points_are_skipped_and_counted(tmp_path, shapes_json, caplog):
    def mutate(data):
        data["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]
        data["annotations"][1]["segmentation"] = [[1, 1, 5, 5, 9]]
    path, images = _variant(tmp_path, shapes_json, mutate)
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(path, images, "bad_input_polygon")
    assert sum(len(d["annotations"]) for d in dicts) == len(shapes_json[1]["annotations"]) - 2
    assert "Filtered out 2 instances without valid segmentation" in caplog.text


def test_images_without_annotations_are_skipped_and_counted(tmp_path, shapes_json, caplog):
    first = shapes_json[1]["images"][0]["id"]

    def mutate(data):
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
    path, images = _variant(tmp_path, shapes_json, mutate)
    DatasetCatalog.register("bad_input_unannotated", lambda: load_coco_json(path, images))
    try:
        with caplog.at_level(logging.INFO):
            dicts = get_detection_dataset_dicts(["bad_input_unannotated"])
    finally:
        DatasetCatalog.remove("bad_input_unannotated")
    assert len(dicts) == 2
    assert "Removed 1 images with no usable annotations. 2 images left." in caplog.text


def test_empty_dataset_is_named():
    DatasetCatalog.register("bad_input_empty", lambda: [])
    try:
        with pytest.raises(ValueError, match=r"^Dataset 'bad_input_empty' is empty!$"):
            get_detection_dataset_dicts(["bad_input_empty"])
    finally:
        DatasetCatalog.remove("bad_input_empty")


# --- weights and processes ----------------------------------------------------------------

class _Old(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 4)
        self.extra = nn.Linear(2, 2)


class _New(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 5)  # another number of classes
        self.neck = nn.Linear(8, 8)


def test_weights_of_another_architecture_report_missing_unexpected_and_mismatched(tmp_path,
                                                                                  caplog):
    old = _Old()
    torch.save({"model": old.state_dict()}, tmp_path / "old.pth")
    new = _New()
    with caplog.at_level(logging.INFO):
        incompatible = DetectionCheckpointer(new).load(str(tmp_path / "old.pth"))
    assert incompatible == {}
    assert torch.equal(new.stem.weight, old.stem.weight)
    text = caplog.text
    assert "Skip loading parameter 'head.weight' to the model due to incompatible shapes: " \
           "(4, 8) in the checkpoint but (5, 8) in the model!" in text
    assert "Some model parameters or buffers are not found in the checkpoint:" in text
    assert "neck.{bias, weight}" in text and "head.{bias, weight}" in text
    assert "The checkpoint state_dict contains keys that are not used by the model:" in text
    assert "extra.{bias, weight}" in text


def test_num_gpus_larger_than_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError) as info:
        launch(lambda: None, 4)
    assert str(info.value) == (
        "--num-gpus 4 asks for more processes than the 1 visible CUDA device(s)."
    )


def test_num_gpus_without_cuda_larger_than_cpu_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ValueError) as info:
        launch(lambda: None, 3)
    assert str(info.value) == (
        "--num-gpus 3: no CUDA device is visible, so it asks for 3 CPU worker processes, but "
        "this machine has 2 CPU core(s). Use --num-gpus 1, or at most the number of cores."
    )
