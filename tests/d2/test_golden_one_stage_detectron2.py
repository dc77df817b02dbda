"""The core's RetinaNet and deformable ResNet reproduce real detectron2 v0.6, in float64.

``tests/data/golden_one_stage/*.pth`` were written by ``make_golden.py`` next to them, running
real detectron2 (torchvision's kernels): a narrow RetinaNet R50-FPN and a narrow Faster R-CNN
R50-FPN with deformable convs in res3-res5 (``Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5``, boxes
only), with unit-scale float64 activations. The core rebuilds each from the config dump, loads
the weights strictly and must give the same losses and detections; its deformable kernel and
nms are its own PyTorch code here, so this also checks them against torchvision's.

Tolerances: float64 with unit-scale activations moves results by ~1e-15 relative under another
summation order (CPU vector width, threads); detectron2 decodes boxes in float32 on both
backends, which bounds agreement after a decoded box at ~1e-7 relative. Losses and scores use
rtol 1e-6, boxes (< 400 px) atol 1e-4; a real difference moves them by 1e-3 or more.
"""
import importlib
import os

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.modeling import build_model
from sephnet.d2.structures import Boxes, Instances
from sephnet.d2.utils.events import EventStorage

HERE = os.path.join(os.path.dirname(__file__), os.pardir, "data", "golden_one_stage")
NAMES = ["tiny_retinanet_R_50_FPN", "tiny_faster_rcnn_R_50_FPN_dconv_c3_c5"]


@pytest.fixture(autouse=True)
def _core_kernels(monkeypatch):
    """The core's own nms (torchvision's refuses float32 boxes with float64 scores, which is
    what detectron2 passes in float64) and deformable conv."""
    for module in ("sephnet.d2.layers.nms", "sephnet.d2.layers.deform_conv"):
        monkeypatch.setattr(importlib.import_module(module), "torchvision_ops", lambda: None)


def _load(name):
    blob = torch.load(os.path.join(HERE, name + ".pth"), weights_only=False)
    cfg = get_cfg()
    cfg.merge_from_other_cfg(cfg.load_cfg(blob["config"]))
    torch.manual_seed(0)
    model = build_model(cfg).double()
    model.load_state_dict(blob["model"], strict=True)
    return blob, model


def _batch(blob, with_targets):
    batch = []
    for d in blob["inputs"]:
        item = {"image": d["image"], "height": d["height"], "width": d["width"]}
        if with_targets:
            item["instances"] = Instances(
                tuple(d["image"].shape[1:]), gt_boxes=Boxes(d["gt_boxes"]), gt_classes=d["gt_classes"]
            )
        batch.append(item)
    return batch


@pytest.mark.parametrize("name", NAMES)
def test_losses_equal_detectron2(name):
    blob, model = _load(name)
    model.train()
    torch.manual_seed(7)  # as the generator, before its training forward
    with EventStorage(0):
        losses = model(_batch(blob, with_targets=True))
    assert sorted(losses) == sorted(blob["losses"])
    for key, expected in blob["losses"].items():
        assert losses[key].item() == pytest.approx(expected, rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("name", NAMES)
def test_detections_equal_detectron2(name):
    blob, model = _load(name)
    model.eval()
    with torch.no_grad():
        outputs = model(_batch(blob, with_targets=False))
    for out, expected in zip(outputs, blob["outputs"]):
        inst = out["instances"]
        assert len(inst) == len(expected["scores"]) > 0
        torch.testing.assert_close(inst.pred_boxes.tensor, expected["pred_boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(inst.scores, expected["scores"], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(inst.pred_classes, expected["pred_classes"])
