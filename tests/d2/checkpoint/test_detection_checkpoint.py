"""DetectionCheckpointer: Caffe2 / torchvision / detectron2 files into a model with
detectron2-style parameter names, logging of incompatible keys, errors."""
import logging
import os
import pickle
import urllib.error

import iopath.common.file_io
import numpy as np
import pytest
import torch
from torch import nn

from sephnet.d2.checkpoint import Checkpointer, DetectionCheckpointer, PeriodicCheckpointer
from sephnet.d2.checkpoint.c2_model_loading import convert_torchvision_resnet_names
from sephnet.d2.checkpoint.catalog import ModelCatalog
from sephnet.d2.layers import Conv2d, FrozenBatchNorm2d
from sephnet.d2.utils.file_io import DownloadError

NUM_CLASSES = 3
FVCORE_LOGGER = "fvcore.common.checkpoint"


def _conv(cin, cout, k, norm=True, bias=False):
    return Conv2d(cin, cout, kernel_size=k, bias=bias, norm=FrozenBatchNorm2d(cout) if norm else None)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = _conv(4, 4, 1)
        self.shortcut = _conv(4, 8, 1)


class _ToyDetector(nn.Module):
    """Just the module names of a ResNet-FPN Mask R-CNN, at toy sizes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))
        self.register_buffer("pixel_std", torch.ones(3, 1, 1))
        self.backbone = nn.Module()
        self.backbone.bottom_up = nn.Module()
        self.backbone.bottom_up.stem = nn.Module()
        self.backbone.bottom_up.stem.conv1 = _conv(3, 4, 3)
        self.backbone.bottom_up.res2 = nn.Sequential(_Block())
        self.backbone.fpn_lateral2 = _conv(8, 6, 1, norm=False, bias=True)
        self.backbone.fpn_output2 = _conv(6, 6, 3, norm=False, bias=True)
        self.proposal_generator = nn.Module()
        self.proposal_generator.rpn_head = nn.Module()
        head = self.proposal_generator.rpn_head
        head.conv = _conv(6, 6, 3, norm=False, bias=True)
        head.objectness_logits = _conv(6, 3, 1, norm=False, bias=True)
        head.anchor_deltas = _conv(6, 12, 1, norm=False, bias=True)
        self.roi_heads = nn.Module()
        self.roi_heads.box_head = nn.Module()
        self.roi_heads.box_head.fc1 = nn.Linear(24, 10)
        self.roi_heads.box_head.fc2 = nn.Linear(10, 10)
        self.roi_heads.box_predictor = nn.Module()
        self.roi_heads.box_predictor.cls_score = nn.Linear(10, NUM_CLASSES + 1)
        self.roi_heads.box_predictor.bbox_pred = nn.Linear(10, 4 * NUM_CLASSES)
        self.roi_heads.mask_head = nn.Module()
        self.roi_heads.mask_head.mask_fcn1 = _conv(6, 6, 3, norm=False, bias=True)
        self.roi_heads.mask_head.predictor = _conv(6, NUM_CLASSES, 1, norm=False, bias=True)


def _rand(*shape):
    return np.random.rand(*shape).astype(np.float32)


def _caffe2_blobs():
    k = NUM_CLASSES
    return {
        "conv1_w": _rand(4, 3, 3, 3),
        "res_conv1_bn_s": _rand(4),
        "res_conv1_bn_b": _rand(4),
        "res_conv1_bn_rm": _rand(4),
        "res_conv1_bn_riv": _rand(4),
        "res2_0_branch2a_w": _rand(4, 4, 1, 1),
        "res2_0_branch2a_bn_s": _rand(4),
        "res2_0_branch2a_bn_b": _rand(4),
        "res2_0_branch1_w": _rand(8, 4, 1, 1),
        "res2_0_branch1_bn_s": _rand(8),
        "res2_0_branch1_bn_b": _rand(8),
        "fpn_inner_res2_2_sum_lateral_w": _rand(6, 8, 1, 1),
        "fpn_inner_res2_2_sum_lateral_b": _rand(6),
        "fpn_res2_2_sum_w": _rand(6, 6, 3, 3),
        "fpn_res2_2_sum_b": _rand(6),
        "conv_rpn_fpn2_w": _rand(6, 6, 3, 3),
        "conv_rpn_fpn2_b": _rand(6),
        "rpn_cls_logits_fpn2_w": _rand(3, 6, 1, 1),
        "rpn_cls_logits_fpn2_b": _rand(3),
        "rpn_bbox_pred_fpn2_w": _rand(12, 6, 1, 1),
        "rpn_bbox_pred_fpn2_b": _rand(12),
        "fc6_w": _rand(10, 24),
        "fc6_b": _rand(10),
        "fc7_w": _rand(10, 10),
        "fc7_b": _rand(10),
        "cls_score_w": _rand(k + 1, 10),
        "cls_score_b": _rand(k + 1),
        "bbox_pred_w": _rand(4 * (k + 1), 10),
        "bbox_pred_b": _rand(4 * (k + 1)),
        "_[mask]_fcn1_w": _rand(6, 6, 3, 3),
        "_[mask]_fcn1_b": _rand(6),
        "mask_fcn_logits_w": _rand(k + 1, 6, 1, 1),
        "mask_fcn_logits_b": _rand(k + 1),
        "conv1_w_momentum": _rand(4, 3, 3, 3),  # optimizer state in Detectron files: dropped
    }


def _expected_from_blobs(b):
    """detectron2 model key -> the array it must hold, written out independently."""
    p = "backbone.bottom_up."
    return {
        p + "stem.conv1.weight": b["conv1_w"],
        p + "stem.conv1.norm.weight": b["res_conv1_bn_s"],
        p + "stem.conv1.norm.bias": b["res_conv1_bn_b"],
        p + "stem.conv1.norm.running_mean": b["res_conv1_bn_rm"],
        p + "stem.conv1.norm.running_var": b["res_conv1_bn_riv"],
        p + "res2.0.conv1.weight": b["res2_0_branch2a_w"],
        p + "res2.0.conv1.norm.weight": b["res2_0_branch2a_bn_s"],
        p + "res2.0.conv1.norm.bias": b["res2_0_branch2a_bn_b"],
        p + "res2.0.shortcut.weight": b["res2_0_branch1_w"],
        p + "res2.0.shortcut.norm.weight": b["res2_0_branch1_bn_s"],
        p + "res2.0.shortcut.norm.bias": b["res2_0_branch1_bn_b"],
        "backbone.fpn_lateral2.weight": b["fpn_inner_res2_2_sum_lateral_w"],
        "backbone.fpn_lateral2.bias": b["fpn_inner_res2_2_sum_lateral_b"],
        "backbone.fpn_output2.weight": b["fpn_res2_2_sum_w"],
        "backbone.fpn_output2.bias": b["fpn_res2_2_sum_b"],
        "proposal_generator.rpn_head.conv.weight": b["conv_rpn_fpn2_w"],
        "proposal_generator.rpn_head.conv.bias": b["conv_rpn_fpn2_b"],
        "proposal_generator.rpn_head.objectness_logits.weight": b["rpn_cls_logits_fpn2_w"],
        "proposal_generator.rpn_head.objectness_logits.bias": b["rpn_cls_logits_fpn2_b"],
        "proposal_generator.rpn_head.anchor_deltas.weight": b["rpn_bbox_pred_fpn2_w"],
        "proposal_generator.rpn_head.anchor_deltas.bias": b["rpn_bbox_pred_fpn2_b"],
        "roi_heads.box_head.fc1.weight": b["fc6_w"],
        "roi_heads.box_head.fc1.bias": b["fc6_b"],
        "roi_heads.box_head.fc2.weight": b["fc7_w"],
        "roi_heads.box_head.fc2.bias": b["fc7_b"],
        # Caffe2 puts background first; detectron2 puts it last ...
        "roi_heads.box_predictor.cls_score.weight": np.concatenate([b["cls_score_w"][1:], b["cls_score_w"][:1]]),
        "roi_heads.box_predictor.cls_score.bias": np.concatenate([b["cls_score_b"][1:], b["cls_score_b"][:1]]),
        # ... and has no background box deltas / mask
        "roi_heads.box_predictor.bbox_pred.weight": b["bbox_pred_w"][4:],
        "roi_heads.box_predictor.bbox_pred.bias": b["bbox_pred_b"][4:],
        "roi_heads.mask_head.mask_fcn1.weight": b["_[mask]_fcn1_w"],
        "roi_heads.mask_head.mask_fcn1.bias": b["_[mask]_fcn1_b"],
        "roi_heads.mask_head.predictor.weight": b["mask_fcn_logits_w"][1:],
        "roi_heads.mask_head.predictor.bias": b["mask_fcn_logits_b"][1:],
    }


def _assert_loaded(model, expected):
    sd = model.state_dict()
    for key, value in expected.items():
        assert sd[key].shape == value.shape, key
        assert torch.equal(sd[key], torch.from_numpy(np.ascontiguousarray(value))), key


@pytest.mark.parametrize("nested", [True, False], ids=["blobs", "flat"])
def test_caffe2_pkl_every_blob_lands_in_its_parameter(tmp_path, caplog, nested):
    blobs = _caffe2_blobs()
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs, "cfg": "..."} if nested else blobs, f)
    model = _ToyDetector()
    with caplog.at_level(logging.INFO):
        extra = DetectionCheckpointer(model).load(str(path))
    assert extra == {"__author__": "Caffe2", "matching_heuristics": True}
    expected = _expected_from_blobs(blobs)
    _assert_loaded(model, expected)
    # every model entry came from the file except BN statistics that Caffe2 did not store;
    # FrozenBatchNorm2d fills those itself for version-less (legacy) checkpoints, as in
    # detectron2, so nothing is reported missing
    unset = set(model.state_dict()) - set(expected) - {"pixel_mean", "pixel_std"}
    assert unset == {
        "backbone.bottom_up.res2.0.conv1.norm.running_mean",
        "backbone.bottom_up.res2.0.conv1.norm.running_var",
        "backbone.bottom_up.res2.0.shortcut.norm.running_mean",
        "backbone.bottom_up.res2.0.shortcut.norm.running_var",
    }
    assert "not found in the checkpoint" not in caplog.text
    assert "Following weights matched with model:" in caplog.text
    assert "| roi_heads.box_predictor.cls_score.* " in caplog.text
    assert "pixel_mean" not in caplog.text  # filled from the config, never reported
    assert "momentum" not in caplog.text
    assert "unexpected" not in caplog.text.lower() and "not used by the model" not in caplog.text


def test_detectron2_model_zoo_pkl_without_conversion(tmp_path):
    model = _ToyDetector()
    src = {k: v.numpy() * 0 + 7 for k, v in model.state_dict().items()}
    path = tmp_path / "zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": src, "__author__": "Detectron2 Model Zoo"}, f)
    extra = DetectionCheckpointer(model).load(str(path))
    assert extra == {"__author__": "Detectron2 Model Zoo"}
    assert all((v == 7).all() for v in model.state_dict().values())


def test_torchvision_resnet_converted_then_loaded_with_heuristics(tmp_path, caplog):
    tv = {
        "conv1.weight": torch.rand(4, 3, 3, 3),
        "bn1.weight": torch.rand(4),
        "bn1.bias": torch.rand(4),
        "bn1.running_mean": torch.rand(4),
        "bn1.running_var": torch.rand(4),
        "bn1.num_batches_tracked": torch.tensor(5),
        "layer1.0.conv1.weight": torch.rand(4, 4, 1, 1),
        "layer1.0.bn1.weight": torch.rand(4),
        "layer1.0.bn1.bias": torch.rand(4),
        "layer1.0.downsample.0.weight": torch.rand(8, 4, 1, 1),
        "layer1.0.downsample.1.weight": torch.rand(8),
        "layer1.0.downsample.1.running_var": torch.rand(8),
        "fc.weight": torch.rand(1000, 8),
    }
    converted = {k: v.numpy() for k, v in convert_torchvision_resnet_names(tv).items()}
    path = tmp_path / "r50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": converted, "__author__": "torchvision", "matching_heuristics": True}, f)
    model = _ToyDetector()
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(model).load(str(path))
    sd = model.state_dict()
    p = "backbone.bottom_up."
    pairs = {
        p + "stem.conv1.weight": "conv1.weight",
        p + "stem.conv1.norm.weight": "bn1.weight",
        p + "stem.conv1.norm.bias": "bn1.bias",
        p + "stem.conv1.norm.running_mean": "bn1.running_mean",
        p + "stem.conv1.norm.running_var": "bn1.running_var",
        p + "res2.0.conv1.weight": "layer1.0.conv1.weight",
        p + "res2.0.conv1.norm.weight": "layer1.0.bn1.weight",
        p + "res2.0.conv1.norm.bias": "layer1.0.bn1.bias",
        p + "res2.0.shortcut.weight": "layer1.0.downsample.0.weight",
        p + "res2.0.shortcut.norm.weight": "layer1.0.downsample.1.weight",
        p + "res2.0.shortcut.norm.running_var": "layer1.0.downsample.1.running_var",
    }
    for d2_key, tv_key in pairs.items():
        assert torch.equal(sd[d2_key], tv[tv_key]), d2_key
    # the classifier and the BN counter have no place in a detector: reported, not loaded
    assert "The checkpoint state_dict contains keys that are not used by the model" in caplog.text
    assert "stem.fc.weight" in caplog.text
    assert "stem.conv1.norm.num_batches_tracked" in caplog.text


class _Progress:
    """A stand-in for an optimizer/scheduler: anything with state_dict/load_state_dict."""

    def __init__(self, step: int = 0, lr: float = 0.5):
        self.step, self.lr, self.buffer = step, lr, torch.zeros(3)

    def state_dict(self):
        return {"step": self.step, "lr": self.lr, "buffer": self.buffer.clone()}

    def load_state_dict(self, state):
        self.step, self.lr, self.buffer = state["step"], state["lr"], state["buffer"]


def test_pth_round_trip_with_extra_checkpointables(tmp_path):
    model = _ToyDetector()
    for p in model.parameters():
        nn.init.normal_(p)
    progress = _Progress(step=9, lr=0.1)
    progress.buffer = torch.tensor([1.0, 2.0, 3.0])
    ckpt = DetectionCheckpointer(model, str(tmp_path), progress=progress)
    assert ckpt.save_to_disk  # single process = main process
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "model_0000009.pth").is_file()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"

    model2, progress2 = _ToyDetector(), _Progress()
    ckpt2 = DetectionCheckpointer(model2, str(tmp_path), progress=progress2)
    assert ckpt2.has_checkpoint()
    extra = ckpt2.resume_or_load("ignored.pth", resume=True)
    assert extra == {"iteration": 9}
    assert model2.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(model2.state_dict()[k], v), k
    assert (progress2.step, progress2.lr) == (9, 0.1)
    assert progress2.buffer.tolist() == [1.0, 2.0, 3.0]

    # without resume, only the model is loaded from the given path
    model3, progress3 = _ToyDetector(), _Progress()
    DetectionCheckpointer(model3, progress=progress3).resume_or_load(
        str(tmp_path / "model_0000009.pth"), resume=False
    )
    assert progress3.step == 0
    assert torch.equal(model3.backbone.fpn_lateral2.weight, model.backbone.fpn_lateral2.weight)


def test_bare_state_dict_pth(tmp_path):
    model = _ToyDetector()
    path = tmp_path / "bare.pth"
    torch.save({k: torch.full_like(v, 3.0) for k, v in model.state_dict().items()}, path)
    assert DetectionCheckpointer(model).load(str(path)) == {}
    assert torch.equal(model.roi_heads.box_head.fc2.bias, torch.full((10,), 3.0))


def test_incompatible_keys_are_logged_with_their_names(tmp_path, caplog):
    model = _ToyDetector()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    del sd["roi_heads.box_head.fc2.weight"]
    del sd["pixel_std"]
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 10)
    sd["roi_heads.keypoint_head.score_lowres.weight"] = torch.zeros(1)
    sd["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(3, 4)
    path = tmp_path / "model.pth"
    torch.save({"model": sd, "iteration": 1}, path)
    with caplog.at_level(logging.WARNING, logger=FVCORE_LOGGER):
        extra = DetectionCheckpointer(model).load(str(path))
    assert extra == {"iteration": 1}
    text = caplog.text
    assert (
        "Skip loading parameter 'roi_heads.box_predictor.cls_score.weight' to the model due to "
        "incompatible shapes: (81, 10) in the checkpoint but (4, 10) in the model!"
    ) in text
    assert "Some model parameters or buffers are not found in the checkpoint:" in text
    assert "roi_heads.box_head.fc2.weight" in text
    assert "The checkpoint state_dict contains keys that are not used by the model:" in text
    assert "roi_heads.keypoint_head.score_lowres.weight" in text
    # legacy/config-filled entries are not reported
    assert "pixel_std" not in text and "cell_anchors" not in text


def test_truncated_pth_raises_clear_error(tmp_path):
    model = _ToyDetector()
    good = tmp_path / "good.pth"
    DetectionCheckpointer(model, str(tmp_path)).save("good")
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.pth.*truncated, corrupt"):
        DetectionCheckpointer(_ToyDetector()).load(str(bad))


def test_corrupt_pkl_raises_clear_error(tmp_path):
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(3)}})[:-10])
    with pytest.raises(ValueError, match="broken.pkl"):
        DetectionCheckpointer(_ToyDetector()).load(str(bad))
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="list.pkl: expected a pickled dict"):
        DetectionCheckpointer(_ToyDetector()).load(str(not_dict))


def test_missing_local_file():
    with pytest.raises(AssertionError, match="Checkpoint /nonexistent/model.pth not found"):
        DetectionCheckpointer(_ToyDetector()).load("/nonexistent/model.pth")


def test_empty_path_loads_nothing():
    assert DetectionCheckpointer(_ToyDetector()).load("") == {}


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every download fails as it would offline; the download cache is an empty directory."""
    monkeypatch.setenv("IOPATH_CACHE", str(tmp_path / "cache"))
    requested = []

    def refuse(url, *args, **kwargs):
        requested.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(iopath.common.file_io, "download", refuse)
    return requested


def test_detectron2_url_without_network_names_the_url(no_network):
    url = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(DownloadError, match="ImageNetPretrained/MSRA/R-50.pkl") as info:
        DetectionCheckpointer(_ToyDetector()).load("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    assert url in str(info.value)
    assert isinstance(info.value, OSError)
    assert no_network == [url]


def test_catalog_path_resolves_to_c2_url(no_network):
    url = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
    assert ModelCatalog.get("ImageNetPretrained/MSRA/R-50") == url
    with pytest.raises(DownloadError, match="detectron/ImageNetPretrained/MSRA/R-50.pkl"):
        DetectionCheckpointer(_ToyDetector()).load("catalog://ImageNetPretrained/MSRA/R-50")
    assert no_network == [url]


def test_catalog_entries_and_errors():
    assert ModelCatalog.get("Caffe2Detectron/COCO/35857345/e2e_faster_rcnn_R-50-FPN_1x") == (
        "https://dl.fbaipublicfiles.com/detectron/35857345/12_2017_baselines/"
        "e2e_faster_rcnn_R-50-FPN_1x.yaml.01_36_30.cUF7QR7I/output/train/"
        "coco_2014_train%3Acoco_2014_valminusminival/generalized_rcnn/model_final.pkl"
    )
    assert "/rpn/model_final.pkl" in ModelCatalog.get("Caffe2Detectron/COCO/35998355/rpn_R-50-C4_1x")
    assert "keypoints_coco_2014_train" in ModelCatalog.get(
        "Caffe2Detectron/COCO/37697547/e2e_keypoint_rcnn_R-50-FPN_1x"
    )
    with pytest.raises(RuntimeError, match="model not present in the catalog: Foo/bar"):
        ModelCatalog.get("Foo/bar")
    with pytest.raises(KeyError, match="ImageNetPretrained/MSRA/R-51"):
        ModelCatalog.get("ImageNetPretrained/MSRA/R-51")


def test_package_exports_fvcore_classes():
    assert issubclass(DetectionCheckpointer, Checkpointer)
    assert PeriodicCheckpointer.__module__ == "fvcore.common.checkpoint"
    assert not DetectionCheckpointer(_ToyDetector(), "somewhere", save_to_disk=False).save_to_disk


def test_save_disabled_writes_nothing(tmp_path):
    DetectionCheckpointer(_ToyDetector(), str(tmp_path), save_to_disk=False).save("m")
    assert os.listdir(tmp_path) == []


def test_pth_with_python_objects_falls_back_to_full_unpickler_with_warning(tmp_path, caplog):
    import fractions

    model = _ToyDetector()
    path = tmp_path / "old_style.pth"
    torch.save({"model": model.state_dict(), "note": fractions.Fraction(1, 3)}, path)
    with caplog.at_level(logging.WARNING, logger=FVCORE_LOGGER):
        extra = DetectionCheckpointer(_ToyDetector()).load(str(path))
    assert extra == {"note": fractions.Fraction(1, 3)}
    assert "old_style.pth holds objects other than tensors" in caplog.text
