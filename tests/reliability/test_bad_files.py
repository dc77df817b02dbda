"""Each unusable file a run is given gets one line naming the key or flag, the path and why:
MODEL.WEIGHTS, --config-file and dataset json files (sephnet.engine.file_checks, run by
train_net.py's setup on both backends)."""
import json
import os
import pickle
import sys

import pytest
import torch
from torch import nn

from sephnet.backend import DatasetCatalog, MetadataCatalog
from sephnet.engine.file_checks import (
    InputFileError,
    check_config_file,
    check_dataset_json,
    check_weights_file,
    check_weights_fit_model,
    guard_dataset_json,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _message(fn, *args, **kwargs):
    with pytest.raises(InputFileError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))


# --- MODEL.WEIGHTS --------------------------------------------------------------------------

def test_weights_missing_directory_and_empty(tmp_path):
    path = str(tmp_path / "nope.pth")
    assert _message(check_weights_file, path) == f"MODEL.WEIGHTS={path!r}: no such file."
    assert _message(check_weights_file, str(tmp_path)) == (
        f"MODEL.WEIGHTS={str(tmp_path)!r} is a directory, not a file.")
    (tmp_path / "empty.pth").write_bytes(b"")
    path = str(tmp_path / "empty.pth")
    assert _message(check_weights_file, path) == f"MODEL.WEIGHTS={path!r} is empty (0 bytes)."


def test_weights_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("evaluate this\n")
    assert _message(check_weights_file, str(path)) == (
        f"MODEL.WEIGHTS={str(path)!r} is not a checkpoint: neither a PyTorch (zip) file nor a "
        "pickle (it starts with b'eval').")


def test_weights_truncated_zip_and_pickle(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": _tiny().state_dict()}, good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    path = str(tmp_path / "cut.pth")
    assert _message(check_weights_file, path) == (
        f"MODEL.WEIGHTS={path!r} is truncated: a PyTorch (zip) checkpoint without its end record "
        f"({len(data) // 2} bytes); copy or download it again.")
    blob = pickle.dumps({"model": {"w": [1.0] * 100}}, protocol=2)
    (tmp_path / "cut.pkl").write_bytes(blob[:40])
    path = str(tmp_path / "cut.pkl")
    message = _message(check_weights_file, path)
    assert message.startswith(f"MODEL.WEIGHTS={path!r} is a truncated or damaged pickle (")


def test_weights_pickle_of_something_else(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    assert _message(check_weights_file, str(path)) == (
        f"MODEL.WEIGHTS={str(path)!r} holds list, not model weights (a state dict, or a dict "
        "with 'model').")
    path = tmp_path / "cfg.pth"
    torch.save({"iteration": 3, "lr": 0.1}, path)
    assert _message(check_weights_file, str(path)) == (
        f"MODEL.WEIGHTS={str(path)!r} holds a dict with keys ['iteration', 'lr'] and no tensors, "
        "not model weights (a state dict, or a dict with 'model').")


def test_weights_good_files_give_their_state_dict(tmp_path):
    model = _tiny()
    torch.save({"model": model.state_dict(), "iteration": 5}, tmp_path / "a.pth")
    torch.save(model.state_dict(), tmp_path / "b.pth")
    for name in ("a.pth", "b.pth"):
        state = check_weights_file(str(tmp_path / name))
        assert sorted(state) == sorted(model.state_dict())
    assert check_weights_file("") is None
    assert check_weights_file("detectron2://ImageNetPretrained/MSRA/R-50.pkl") is None


def test_weights_of_another_architecture_name_the_mismatching_keys(tmp_path):
    other = nn.Sequential(nn.Linear(5, 5))
    path = str(tmp_path / "other.pth")
    message = _message(check_weights_fit_model, other.state_dict(), _tiny(), path)
    assert message == (
        f"MODEL.WEIGHTS={path!r} fits none of this model's weights: it is a checkpoint of another "
        "architecture (missing 1.weight, 1.bias; shape (checkpoint vs model) 0.weight (5, 5) vs "
        "(4, 3, 3, 3), 0.bias (5,) vs (4,)).")


def test_weights_missing_some_keys_are_refused_for_evaluation_only(tmp_path):
    model = _tiny()
    partial = {k: v for k, v in model.state_dict().items() if k.startswith("0.")}
    check_weights_fit_model(partial, model, "p.pth")  # fine-tuning from a partial checkpoint
    message = _message(check_weights_fit_model, partial, model, "p.pth", require_all=True)
    assert message == ("MODEL.WEIGHTS='p.pth' does not give every weight of the model: it is a "
                       "checkpoint of another architecture (missing 1.weight, 1.bias).")


# --- --config-file --------------------------------------------------------------------------

def test_config_file_missing_not_yaml_and_not_a_mapping(tmp_path):
    path = str(tmp_path / "none.yaml")
    assert _message(check_config_file, path) == f"--config-file={path!r}: no such file."
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  WEIGHTS: [unclosed\n")
    assert _message(check_config_file, str(bad)) == (
        f"--config-file {str(bad)!r} is not valid YAML at line 3, column 1: expected ',' or ']', "
        "but got '<stream end>'.")
    listed = tmp_path / "list.yaml"
    listed.write_text("- MODEL.WEIGHTS\n- x.pth\n")
    assert _message(check_config_file, str(listed)) == (
        f"--config-file {str(listed)!r} holds a YAML list, not a mapping of config keys (e.g. "
        "'MODEL:' with keys under it).")
    check_config_file(os.path.join(REPO, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml"))


# --- dataset json ---------------------------------------------------------------------------

def test_dataset_json_missing_not_json_and_not_coco(tmp_path):
    path = str(tmp_path / "none.json")
    assert _message(check_dataset_json, path, "mine") == (
        f"dataset 'mine' json_file={path!r}: no such file.")
    bad = tmp_path / "bad.json"
    bad.write_text("{'images': []}")
    assert _message(check_dataset_json, str(bad), "mine") == (
        f"dataset 'mine' json_file={str(bad)!r} is not valid JSON (Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)).")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"images": [], "info": {}}))
    assert _message(check_dataset_json, str(partial), "mine") == (
        f"dataset 'mine' json_file={str(partial)!r} is not COCO format: no 'annotations' / "
        "'categories' list (it has ['images', 'info']).")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    assert _message(check_dataset_json, str(listed), "mine") == (
        f"dataset 'mine' json_file={str(listed)!r} holds a JSON list, not a COCO object with "
        "images, annotations, categories.")


def test_registered_dataset_with_a_bad_json_explains_it(tmp_path):
    from sephnet.backend import register_coco_instances

    path = tmp_path / "anns.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
                                "annotations": []}))
    register_coco_instances("bad_files_ds", {}, str(path), str(tmp_path))
    try:
        guard_dataset_json("bad_files_ds", training=True)
        guard_dataset_json("bad_files_ds", training=True)  # idempotent
        with pytest.raises(InputFileError, match=r"no 'categories' list"):
            DatasetCatalog.get("bad_files_ds")
    finally:
        DatasetCatalog.remove("bad_files_ds")
        MetadataCatalog.remove("bad_files_ds")


def test_train_net_eval_only_with_a_text_file_as_weights(tmp_path, monkeypatch):
    sys.path.insert(0, REPO)
    try:
        import train_net
    finally:
        sys.path.remove(REPO)
    weights = tmp_path / "w.pth"
    weights.write_text("not weights\n")
    args = train_net.argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml"),
        "--eval-only", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    with pytest.raises(InputFileError, match=r"^MODEL\.WEIGHTS='.*w\.pth' is not a checkpoint"):
        train_net.main(args)
