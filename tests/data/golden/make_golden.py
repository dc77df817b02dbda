"""Regenerate the cross-backend golden files with REAL detectron2 (not run by the tests).

Usage, on a machine where ``import detectron2`` works::

    python tests/data/golden/make_golden.py

For every tiny model below it builds detectron2's model from a config, perturbs the random
initial weights (so every parameter matters), runs one training forward on fixed inputs
with a fixed seed and one inference, and saves weights, config, inputs and outputs to
``tests/data/golden/<name>.pth``. ``tests/d2/test_golden_detectron2.py`` loads the same
weights into the portable core and checks that it reproduces these numbers.
"""
import os

import numpy as np
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

HERE = os.path.dirname(os.path.abspath(__file__))

# settings shared by all models; then name -> (detectron2 config, overrides, weight noise)
TINY = [
    "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 4, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 200,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 400, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 400, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
]
MODELS = {
    "tiny_mask_rcnn_R_50_FPN": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", [], 0.01),
    "tiny_cascade_mask_rcnn_R_50_FPN": (
        "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", [], 0.002),
    "tiny_mask_rcnn_R_50_C4": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", ["MODEL.RESNETS.RES5_DILATION", 1], 0.002),
}
CONFIG_ROOT = os.environ.get("DETECTRON2_CONFIGS", "configs")


def _inputs():
    g = torch.Generator().manual_seed(123)
    images = [torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8),
              torch.randint(0, 256, (3, 80, 72), generator=g, dtype=torch.uint8)]
    batched = []
    for k, img in enumerate(images):
        h, w = img.shape[1:]
        boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 70.0, 60.0]])[: k + 1]
        boxes[:, 0::2].clamp_(max=w - 1)
        boxes[:, 1::2].clamp_(max=h - 1)
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[i, y0:y1, x0:x1] = True
        inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2])[: k + 1],
                         gt_masks=BitMasks(masks))
        batched.append({"image": img, "height": 2 * h, "width": 2 * w, "instances": inst})
    return batched


def main():
    for name, (path, extra, noise) in MODELS.items():
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(CONFIG_ROOT, path))
        cfg.merge_from_list(TINY + extra)
        torch.manual_seed(0)
        model = build_model(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
        inputs = _inputs()
        model.train()
        torch.manual_seed(7)
        with EventStorage(0):
            losses = {k: v.item() for k, v in model(inputs).items()}
        model.eval()
        with torch.no_grad():
            outs = model([{k: v for k, v in d.items() if k != "instances"} for d in inputs])
        outputs = [
            {
                "pred_boxes": o["instances"].pred_boxes.tensor,
                "scores": o["instances"].scores,
                "pred_classes": o["instances"].pred_classes,
                "pred_masks_packed": torch.from_numpy(
                    np.packbits(o["instances"].pred_masks.numpy(), axis=-1)
                ),
            }
            for o in outs
        ]
        blob = {
            "config": cfg.dump(),
            "model": {k: v.clone() for k, v in model.state_dict().items()},
            "inputs": [
                {
                    "image": d["image"],
                    "height": d["height"],
                    "width": d["width"],
                    "gt_boxes": d["instances"].gt_boxes.tensor,
                    "gt_classes": d["instances"].gt_classes,
                    "gt_masks": d["instances"].gt_masks.tensor,
                }
                for d in inputs
            ],
            "losses": losses,
            "outputs": outputs,
            "detectron2_version": __import__("detectron2").__version__,
        }
        torch.save(blob, os.path.join(HERE, name + ".pth"))
        print(name, losses, [len(o["scores"]) for o in outputs])


if __name__ == "__main__":
    # The perturbed random weights make activations large, so float summation order matters
    # at the 1e-4 level: generate with one thread, as the tests run (tests/conftest.py).
    torch.set_num_threads(1)
    np.random.seed(0)
    main()
