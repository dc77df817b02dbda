"""Write the one-stage / deformable golden files with REAL detectron2 v0.6 (tests only read them).

    DETECTRON2_CONFIGS=/path/to/detectron2/configs python tests/data/golden_one_stage/make_golden.py

Models: detectron2's ``COCO-Detection/retinanet_R_50_FPN_1x`` and
``Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5`` (boxes only), narrowed (ResNet-50 with 16-channel res2, 16-channel
FPN, 3 classes). Everything runs in float64 with weights that keep activations at unit scale:
noise on every parameter (so zero-initialised layers matter, offsets included) and frozen-BN
statistics measured on the inputs just before each BN runs. Saved: config, float32-exact
weights, inputs, one training forward's losses (seed 7) and one inference's detections.
"""
import os
import sys

import torch
import torchvision.ops.boxes

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.environ.get("DETECTRON2_CONFIGS", "configs")
NARROW = [
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 16, "MODEL.RESNETS.WIDTH_PER_GROUP", 4,
    "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RETINANET.NUM_CLASSES", 3, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 200,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
]
# name -> (detectron2 config, extra overrides); the dconv model keeps boxes only (the
# deformable backbone is what is tested; masks are covered by the Mask R-CNN golden files)
MODELS = {
    "tiny_retinanet_R_50_FPN": ("COCO-Detection/retinanet_R_50_FPN_1x.yaml", []),
    "tiny_faster_rcnn_R_50_FPN_dconv_c3_c5": ("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml", ["MODEL.MASK_ON", False]),
}


def inputs():
    """Two uint8 images with one and two boxes (classes 0, 2), reported at twice their size."""
    g = torch.Generator().manual_seed(123)
    out = []
    for k, (h, w) in enumerate([(160, 224), (192, 160)]):
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        boxes = torch.tensor([[10.0, 14.0, 120.0, 130.0], [60.0, 30.0, 150.0, 150.0]])[: k + 1]
        inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2])[: k + 1])
        out.append({"image": image, "height": 2 * h, "width": 2 * w, "instances": inst})
    return out


def condition(model, batch):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype))

    def calibrate(bn, args):
        x = args[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)
        bn.weight.copy_(1.0 + 0.1 * torch.randn(bn.num_features, generator=g, dtype=x.dtype))
        bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g, dtype=x.dtype))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    model.eval()
    with torch.no_grad():
        model([{k: v for k, v in d.items() if k != "instances"} for d in batch])
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.float())  # exactly representable in the float32 file
    for h in hooks:
        h.remove()


def nms_in_score_order(nms):
    """detectron2 v0.6's batched_nms passes float32 boxes with float64 scores, which
    torchvision's CPU kernel refuses: run it on the float64 score ranks instead."""

    def run(boxes, scores, iou_threshold):
        order = torch.sort(scores, descending=True, stable=True)[1]
        ranks = torch.arange(len(order), 0, -1, dtype=boxes.dtype)
        return order[nms(boxes[order], ranks, iou_threshold)]

    return run


def make(name):
    cfg = get_cfg()
    config_file, overrides = MODELS[name]
    cfg.merge_from_file(os.path.join(CONFIGS, config_file))
    cfg.merge_from_list(NARROW + overrides)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    batch = inputs()
    condition(model, batch)
    model.train()
    torch.manual_seed(7)
    with EventStorage(0):
        losses = {k: v.item() for k, v in model(batch).items()}
    model.eval()
    with torch.no_grad():
        outs = model([{k: v for k, v in d.items() if k != "instances"} for d in batch])
    fields = []
    for o in outs:
        inst = o["instances"]
        fields.append({"pred_boxes": inst.pred_boxes.tensor, "scores": inst.scores, "pred_classes": inst.pred_classes})
    torch.save(
        {
            "config": cfg.dump(),
            "model": {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()},
            "inputs": [
                {"image": d["image"], "height": d["height"], "width": d["width"],
                 "gt_boxes": d["instances"].gt_boxes.tensor, "gt_classes": d["instances"].gt_classes}
                for d in batch
            ],
            "losses": losses,
            "outputs": fields,
        },
        os.path.join(HERE, name + ".pth"),
    )
    print(name, losses, [len(f["scores"]) for f in fields])


if __name__ == "__main__":
    torchvision.ops.boxes.nms = nms_in_score_order(torchvision.ops.boxes.nms)
    for model_name in sys.argv[1:] or list(MODELS):
        make(model_name)
