"""A Detectron (Caffe2) ResNet-50-FPN file loads completely into the core's real
``build_resnet_fpn_backbone``: the renaming rules fit the module names the backbone uses."""
import logging
import pickle
import re

import numpy as np
import torch

from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.backbone.fpn import build_resnet_fpn_backbone

_NORM_SUFFIX = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def _caffe2_name(d2_key: str, blocks_per_stage: dict) -> str:
    """The Detectron blob name of a detectron2 ResNet-FPN backbone key (written out by hand
    from Detectron's naming scheme, independently of the converter)."""
    key = d2_key[len("backbone.") :]
    m = re.fullmatch(r"bottom_up\.stem\.conv1\.(weight|norm\.(\w+))", key)
    if m:
        return "conv1_w" if m.group(1) == "weight" else f"res_conv1_bn_{_NORM_SUFFIX[m.group(2)]}"
    m = re.fullmatch(r"bottom_up\.res(\d)\.(\d+)\.(conv\d|shortcut)\.(weight|norm\.(\w+))", key)
    if m:
        stage, block, conv, param, norm_param = m.groups()
        base = f"res{stage}_{block}_{_BRANCH[conv]}"
        return base + "_w" if param == "weight" else f"{base}_bn_{_NORM_SUFFIX[norm_param]}"
    m = re.fullmatch(r"fpn_(lateral|output)(\d)\.(weight|bias)", key)
    if m:
        kind, stage, param = m.groups()
        last = blocks_per_stage[int(stage)] - 1
        suffix = "w" if param == "weight" else "b"
        if kind == "output":
            return f"fpn_res{stage}_{last}_sum_{suffix}"
        # the top level's lateral conv has no "_lateral" in Detectron
        lateral = "" if stage == "5" else "_lateral"
        return f"fpn_inner_res{stage}_{last}_sum{lateral}_{suffix}"
    raise AssertionError(f"no Caffe2 name for {d2_key}")


def test_detectron_r50_fpn_blobs_fill_the_whole_backbone(tmp_path, caplog):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 8
    model = torch.nn.Module()
    model.backbone = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    model_sd = model.state_dict()
    blocks = {2: 3, 3: 4, 4: 6, 5: 3}

    blobs = {}
    expected = {}
    rng = np.random.default_rng(0)
    for key, value in model_sd.items():
        arr = rng.standard_normal(tuple(value.shape)).astype(np.float32)
        blobs[_caffe2_name(key, blocks)] = arr
        expected[key] = arr
    assert len(blobs) == len(model_sd)
    path = tmp_path / "R-50-FPN.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f)

    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(str(path))
    loaded = model.state_dict()
    for key, arr in expected.items():
        assert torch.equal(loaded[key], torch.from_numpy(arr)), key
    assert "not found in the checkpoint" not in caplog.text
    assert "not used by the model" not in caplog.text
