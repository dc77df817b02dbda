"""The portable core reproduces real detectron2 v0.6, number for number.

``tests/data/golden/*.pth`` were written by ``tests/data/golden/make_golden.py`` running
REAL detectron2 (v0.6): tiny Mask R-CNN R50-FPN, R50-C4 and Cascade models with perturbed
random weights, fixed inputs, one training forward under a fixed seed and one inference.
(Those runs used sephnet's nms/roi_align kernels in place of torchvision's; the kernels are
checked against slow references in ``tests/d2/layers``.)

Here the core builds each model from the same config dump, loads the same weights with
strict key matching, and must give the same losses and detections.
"""
import os

import numpy as np
import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.modeling import build_model
from sephnet.d2.structures import BitMasks, Boxes, Instances
from sephnet.d2.utils.events import EventStorage

GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "data", "golden")
NAMES = ["tiny_mask_rcnn_R_50_FPN", "tiny_mask_rcnn_R_50_C4", "tiny_cascade_mask_rcnn_R_50_FPN"]


def _load(name):
    blob = torch.load(os.path.join(GOLDEN, name + ".pth"), weights_only=False)
    cfg = get_cfg()
    cfg.merge_from_other_cfg(cfg.load_cfg(blob["config"]))
    torch.manual_seed(0)
    model = build_model(cfg)
    return blob, model


def _inputs(blob, with_targets):
    batched = []
    for d in blob["inputs"]:
        item = {"image": d["image"], "height": d["height"], "width": d["width"]}
        if with_targets:
            item["instances"] = Instances(
                tuple(d["image"].shape[1:]),
                gt_boxes=Boxes(d["gt_boxes"]),
                gt_classes=d["gt_classes"],
                gt_masks=BitMasks(d["gt_masks"]),
            )
        batched.append(item)
    return batched


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_and_shapes_equal_detectron2(name):
    blob, model = _load(name)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in blob["model"].items()}
    assert list(ours) == list(theirs)  # same names, same registration order
    assert ours == theirs


@pytest.mark.parametrize("name", NAMES)
def test_training_losses_equal_detectron2(name):
    blob, model = _load(name)
    model.load_state_dict(blob["model"], strict=True)
    model.train()
    torch.manual_seed(7)  # the generator used the same seed before its training forward
    with EventStorage(0):
        losses = model(_inputs(blob, with_targets=True))
    assert sorted(losses) == sorted(blob["losses"])
    for key, expected in blob["losses"].items():
        assert losses[key].item() == pytest.approx(expected, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("name", NAMES)
def test_inference_equals_detectron2(name):
    blob, model = _load(name)
    model.load_state_dict(blob["model"], strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(_inputs(blob, with_targets=False))
    assert len(outputs) == len(blob["outputs"])
    for out, expected in zip(outputs, blob["outputs"]):
        inst = out["instances"]
        assert len(inst) == len(expected["scores"]) > 0
        torch.testing.assert_close(inst.scores, expected["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(inst.pred_classes, expected["pred_classes"])
        torch.testing.assert_close(
            inst.pred_boxes.tensor, expected["pred_boxes"], rtol=1e-4, atol=1e-3
        )
        width = inst.pred_masks.shape[-1]
        masks = np.unpackbits(expected["pred_masks_packed"].numpy(), axis=-1)[..., :width]
        differing = (inst.pred_masks.numpy() != masks.astype(bool)).mean()
        assert differing < 1e-3  # a float tie at the 0.5 threshold may flip a pixel
