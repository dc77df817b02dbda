"""Every survey-trick config under configs/tricks/ (losses, OHEM, DropBlock, activations,
FRN, validation loss) switches its trick on, and trains a step and evaluates through
train_net on a tiny shapes dataset (ResNet-18 and few ROIs instead of the recipe's R-50 on
COCO; the trick's own keys unchanged)."""
import json
import os

import pytest
import torch
from torch import nn

import train_net
from sephnet.backend import DatasetCatalog, build_model, register_coco_instances
from sephnet.config import validate_sephnet_config
from sephnet.data import ShapesParams, generate_shapes
from sephnet.layers.dropblock import DropBlock2d
from sephnet.layers.frn import FRN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRICKS = os.path.join(REPO, "configs", "tricks")


def _predictor(model):
    return model.roi_heads.box_predictor


def _count(module, cls):
    return sum(type(m) is cls for m in module.modules())


# config file -> what the built model must show
CHECKS = {
    "focal": lambda m, c: _predictor(m).cls_loss.kind == "focal",
    "ghm-c": lambda m, c: _predictor(m).cls_loss.ghm.momentum == 0.75,
    "label-smoothing": lambda m, c: _predictor(m).cls_loss.label_smoothing == 0.1,
    "ohem": lambda m, c: type(m.roi_heads.roi_sampler).__name__ == "OHEMROISampler",
    "balanced-l1": lambda m, c: _predictor(m).box_loss.kind == "balanced_l1",
    "ghm-r": lambda m, c: _predictor(m).box_loss.kind == "ghm_r",
    "iou-loss": lambda m, c: _predictor(m).box_loss.kind == "iou",
    "diou": lambda m, c: _predictor(m).box_reg_loss_type == "diou",
    "ciou": lambda m, c: _predictor(m).box_reg_loss_type == "ciou",
    "dropblock": lambda m, c: _count(m.backbone.bottom_up, DropBlock2d) == 2
    and _count(m.roi_heads.box_head, DropBlock2d) == 4,
    "mish-head": lambda m, c: _count(m.roi_heads.box_head, nn.Mish) > 0,
    "swish-head": lambda m, c: _count(m.roi_heads.box_head, nn.SiLU) > 0,
    "hardswish-head": lambda m, c: _count(m.roi_heads.box_head, nn.Hardswish) > 0,
    "frn": lambda m, c: _count(m.backbone, FRN) > 0,
    "val-loss": lambda m, c: c.MODEL.SEPH.VAL_LOSS.ENABLED,
}
PREFIX = "Mask-RCNN-FPN-sephv14_10-"
CONFIGS = {name: os.path.join(TRICKS, f"{PREFIX}{name}.yaml") for name in CHECKS}

# CPU-sized overrides that leave every trick key alone
SMALL = [
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.ROI_HEADS.NUM_CLASSES", "3",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "10",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "192",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.REFERENCE_WORLD_SIZE", "0",
    "SOLVER.MAX_ITER", "1",
    "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0",
]


def test_every_trick_config_is_checked():
    on_disk = {f for f in os.listdir(TRICKS) if f.startswith(PREFIX)}
    assert on_disk == {os.path.basename(p) for p in CONFIGS.values()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tricks_shapes")
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2))
    names = {}
    for split in ("train", "val"):
        name = f"_test_tricks_{split}_{root.name}"
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name, {}, str(root / "annotations" / f"instances_{split}.json"), str(root / split)
            )
        names[split] = name
    return names


@pytest.mark.slow
@pytest.mark.parametrize("trick", sorted(CHECKS))
def test_trick_config_switches_it_on_trains_a_step_and_evaluates(trick, shapes, tmp_path, sephnet_cfg):
    opts = SMALL + [
        "DATASETS.TRAIN", f"('{shapes['train']}',)",
        "DATASETS.TEST", f"('{shapes['val']}',)",
        "OUTPUT_DIR", str(tmp_path),
    ]
    if trick == "val-loss":
        opts += ["MODEL.SEPH.VAL_LOSS.DATASETS", f"('{shapes['val']}',)"]
    cfg = sephnet_cfg()
    cfg.merge_from_file(CONFIGS[trick])
    cfg.merge_from_list(opts)
    validate_sephnet_config(cfg)
    assert CHECKS[trick](build_model(cfg), cfg), trick

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_net.main(
            train_net.argument_parser().parse_args(["--config-file", CONFIGS[trick], *opts])
        )
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert "bbox/AP50" in lines[-1]  # the final evaluation on the val images
    losses = [x for x in lines if "total_loss" in x]
    assert losses and all(torch.isfinite(torch.tensor(x["total_loss"])) for x in losses)
    if trick == "val-loss":
        assert any("val_total_loss" in x for x in lines)
