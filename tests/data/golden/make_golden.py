"""Regenerate the cross-backend golden files with REAL detectron2 v0.6 (the tests only read them).

Usage, where ``import detectron2`` works, with detectron2's ``configs/`` folder in
``$DETECTRON2_CONFIGS`` (default ``./configs``)::

    python tests/data/golden/make_golden.py            # every model below
    python tests/data/golden/make_golden.py NAME ...   # some of them

Each ``@golden(...)`` function below returns the detectron2 config of one tiny model (the
decorator says which inputs it runs on and whether its box-delta layers get ``DELTA_GAIN``);
adding a model is adding one such function. For every model this builds detectron2's model, gives
it well-conditioned weights (see ``_condition``), runs one training forward under a fixed seed
and one inference on fixed inputs, in float64, and saves weights, config, inputs, losses and
detections to ``tests/data/golden/<name>.pth``. ``tests/d2/test_golden_detectron2.py`` loads
them into the portable core, which must reproduce the numbers.

Why the comparison holds on every CPU: the models run in float64, where summation order
(vector width, thread count) moves a result by ~1e-15 relative, and the weights keep every
activation at unit scale, so nothing amplifies that. The only float32 step is detectron2's own
box decoding (``Box2BoxTransform.apply_deltas`` casts to float32), which both backends share;
it bounds the agreement of everything downstream of a decoded box at float32 precision
(~1e-7 relative), far below the test tolerances and far above a float64 rounding difference.
"""
import os
import sys

import numpy as np
import torch
import torchvision.ops.boxes

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_ROOT = os.environ.get("DETECTRON2_CONFIGS", "configs")

# settings shared by every tiny model (narrow ResNet-50, 3 classes, every detection kept)
TINY = [
    "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 4, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 200,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 400, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 400, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]
# standard deviation of the noise added to every learned parameter, so that each one matters
# (zero-initialised biases and the near-zero initial predictor layers included)
NOISE = 0.02
# gain on the box-delta layers, so that a few percent of the predicted log-scale deltas exceed
# Box2BoxTransform's clamp (log(1000/16)) and the clamp is exercised
DELTA_GAIN = {"anchor_deltas.weight": 20.0, "bbox_pred.weight": 10.0}
# predicted masks are stored (bit-packed) for the highest-scoring detections only, to keep the
# files small; every other field is stored for all detections
MASKS_KEPT = 25


def _inputs(sizes, boxes, with_masks):
    """Two uint8 images of sizes ``sizes`` ((H, W) each) with the first one and two boxes of
    ``boxes`` (classes 0 and 2; with box masks when ``with_masks``), reported at twice their
    size."""
    g = torch.Generator().manual_seed(123)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]
    batched = []
    for k, img in enumerate(images):
        h, w = img.shape[1:]
        gt_boxes = torch.tensor(boxes)[: k + 1]
        gt_boxes[:, 0::2].clamp_(max=w - 1)
        gt_boxes[:, 1::2].clamp_(max=h - 1)
        inst = Instances((h, w), gt_boxes=Boxes(gt_boxes), gt_classes=torch.tensor([0, 2])[: k + 1])
        if with_masks:
            masks = torch.zeros(len(gt_boxes), h, w, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(gt_boxes.round().long().tolist()):
                masks[i, y0:y1, x0:x1] = True
            inst.gt_masks = BitMasks(masks)
        batched.append({"image": img, "height": 2 * h, "width": 2 * w, "instances": inst})
    return batched


def mask_inputs():
    """Large enough that FPN pools boxes from several levels (box side 112 px and up leaves P2)."""
    return _inputs([(192, 288), (240, 216)], [[12.0, 18.0, 170.0, 150.0], [90.0, 30.0, 210.0, 180.0]],
                   with_masks=True)


def box_inputs():
    """Smaller images without masks, for the box-only models."""
    return _inputs([(160, 224), (192, 160)], [[10.0, 14.0, 120.0, 130.0], [60.0, 30.0, 150.0, 150.0]],
                   with_masks=False)


MODELS = {}  # name -> (make_cfg, make_inputs, delta_gain)


def golden(inputs=mask_inputs, delta_gain=True):
    """Register ``make_cfg() -> detectron2 CfgNode`` under its function name, run on
    ``inputs()``, with ``DELTA_GAIN`` applied or not."""

    def register(make_cfg):
        MODELS[make_cfg.__name__] = (make_cfg, inputs, delta_gain)
        return make_cfg

    return register


def _cfg(config_file, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIG_ROOT, config_file))
    cfg.merge_from_list(TINY + list(overrides))
    return cfg


@golden()
def tiny_mask_rcnn_R_50_FPN():
    return _cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")


@golden()
def tiny_cascade_mask_rcnn_R_50_FPN():
    return _cfg("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml")


@golden()
def tiny_mask_rcnn_R_50_C4():
    return _cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", "MODEL.RESNETS.RES5_DILATION", 1)


# the box-only models: the deformable backbone and RetinaNet are what they test (masks are
# covered above); their files were made with RetinaNet's 3 classes and every detection kept,
# and with the config files' own RPN pre-NMS top-k
BOX_ONLY = ["MODEL.RETINANET.NUM_CLASSES", 3, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0]


@golden(inputs=box_inputs, delta_gain=False)
def tiny_retinanet_R_50_FPN():
    return _cfg("COCO-Detection/retinanet_R_50_FPN_1x.yaml", *BOX_ONLY,
                "MODEL.RPN.PRE_NMS_TOPK_TEST", 6000, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 12000)


@golden(inputs=box_inputs, delta_gain=False)
def tiny_faster_rcnn_R_50_FPN_dconv_c3_c5():
    return _cfg("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml", *BOX_ONLY, "MODEL.MASK_ON", False,
                "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000)


def _condition(model, inputs, delta_gain):
    """Well-conditioned float64 weights, each exactly representable in float32 (so the file
    stores float32): random noise on every parameter, and frozen-BN statistics measured on
    the inputs, so every backbone stage sees zero-mean, unit-variance features whatever the
    random convolutions do (uncalibrated, activations grow with depth by orders of magnitude)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(NOISE * torch.randn(p.shape, generator=g, dtype=p.dtype))
            if delta_gain:
                p.mul_(DELTA_GAIN.get(name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1], 1.0))

    def calibrate(bn, args):
        x = args[0]
        c = bn.num_features
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)
        bn.weight.copy_(1.0 + 0.1 * torch.randn(c, generator=g, dtype=x.dtype))
        bn.bias.copy_(0.1 * torch.randn(c, generator=g, dtype=x.dtype))

    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    handles = [m.register_forward_pre_hook(calibrate) for m in frozen]
    model.eval()
    with torch.no_grad():  # one inference runs every frozen BN in order, each calibrated first
        model([{k: v for k, v in d.items() if k != "instances"} for d in inputs])
    for h in handles:
        h.remove()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.float())


def _nms_by_rank(nms):
    """torchvision's CPU nms refuses float32 boxes with float64 scores, which is what
    detectron2 v0.6 passes it in float64 (``batched_nms`` casts only the boxes to float32).
    This gives the result torchvision would give: greedy NMS in the order of the float64
    scores, IoU computed on the float32 boxes (the core's nms does exactly that)."""

    def nms_float64_scores(boxes, scores, iou_threshold):
        order = torch.sort(scores, descending=True, stable=True)[1]
        ranks = torch.arange(len(order), 0, -1, dtype=boxes.dtype)
        return order[nms(boxes[order], ranks, iou_threshold)]

    return nms_float64_scores


def _instances_fields(instances):
    """Every field of predicted Instances as a tensor; the first MASKS_KEPT masks bit-packed
    along width."""
    out = {}
    for key, value in instances.get_fields().items():
        if isinstance(value, Boxes):
            value = value.tensor
        if key == "pred_masks":
            key, value = "pred_masks_packed", torch.from_numpy(np.packbits(value[:MASKS_KEPT].numpy(), axis=-1))
        out[key] = value
    return out


def make(name):
    make_cfg, make_inputs, delta_gain = MODELS[name]
    cfg = make_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).double()
    inputs = make_inputs()
    _condition(model, inputs, delta_gain)
    model.train()
    torch.manual_seed(7)
    with EventStorage(0):
        losses = {k: v.item() for k, v in model(inputs).items()}
    model.eval()
    with torch.no_grad():
        outs = model([{k: v for k, v in d.items() if k != "instances"} for d in inputs])
    blob = {
        "config": cfg.dump(),
        "dtype": "float64",
        "model": {k: (v.float() if v.is_floating_point() else v).clone()
                  for k, v in model.state_dict().items()},
        "inputs": [
            {
                "image": d["image"],
                "height": d["height"],
                "width": d["width"],
                "gt_boxes": d["instances"].gt_boxes.tensor,
                "gt_classes": d["instances"].gt_classes,
                **({"gt_masks": d["instances"].gt_masks.tensor} if d["instances"].has("gt_masks") else {}),
            }
            for d in inputs
        ],
        "losses": losses,
        "outputs": [_instances_fields(o["instances"]) for o in outs],
        "detectron2_version": __import__("detectron2").__version__,
    }
    torch.save(blob, os.path.join(HERE, name + ".pth"))
    print(name, {k: round(v, 6) for k, v in losses.items()}, [len(o["instances"]) for o in outs])


if __name__ == "__main__":
    torchvision.ops.boxes.nms = _nms_by_rank(torchvision.ops.boxes.nms)
    for model_name in sys.argv[1:] or list(MODELS):
        make(model_name)
