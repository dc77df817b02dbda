"""Every augmentation config under configs/tricks/augment/ switches its augmentation on,
trains a step and evaluates through train_net on a tiny shapes dataset (ResNet-18, few
ROIs, 64-96 px images; the augmentation keys unchanged). With MixUp and Mosaic on (and
masks), a run resumed from its first checkpoint ends with the same weights as an
uninterrupted one."""
import json
import os
import shutil

import pytest
import torch

import train_net
from sephnet.backend import BACKEND, DatasetCatalog, register_coco_instances
from sephnet.config import validate_sephnet_config
from sephnet.config import augment as augment_config
from sephnet.data import ShapesParams, generate_shapes
from sephnet.tools.ablation_index import load_index, select_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUGMENT = os.path.join(REPO, "configs", "tricks", "augment")
PREFIX = "Mask-RCNN-FPN-sephv14_10-"

# config file -> the keys it must switch on
CHECKS = {
    "photometric": lambda c: c.MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB > 0,
    "random-erase": lambda c: c.MODEL.SEPH.AUGMENT.RANDOM_ERASE.PROB > 0,
    "cutout": lambda c: c.MODEL.SEPH.AUGMENT.CUTOUT.PROB > 0,
    "mixup": lambda c: c.MODEL.SEPH.AUGMENT.MIXUP.PROB > 0,
    "cutmix": lambda c: c.MODEL.SEPH.AUGMENT.CUTMIX.PROB > 0,
    "mosaic": lambda c: c.MODEL.SEPH.AUGMENT.MOSAIC.PROB > 0,
    "crop": lambda c: c.INPUT.CROP.ENABLED,
}
CONFIGS = {name: os.path.join(AUGMENT, f"{PREFIX}{name}.yaml") for name in CHECKS}

# CPU-sized overrides that leave every augmentation key alone
SMALL = [
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.ROI_HEADS.NUM_CLASSES", "3",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "16",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "10",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.REFERENCE_WORLD_SIZE", "0",
    "SOLVER.MAX_ITER", "1",
    "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0",
]


INDEX = os.path.join(AUGMENT, "ablations.yaml")


def test_every_augmentation_config_is_checked_and_an_ablation_row():
    assert set(os.listdir(AUGMENT)) == {os.path.basename(p) for p in CONFIGS.values()} | {"ablations.yaml"}
    rows = select_rows(load_index(INDEX), ["*"])
    assert {r.config for r in rows} == set(CONFIGS.values()) | {os.path.join(REPO, "configs", "coco", f"{PREFIX[:-1]}.yaml")}
    assert all(r.table == "extra" and r.changes for r in rows)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment_shapes")
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2))
    names = {}
    for split in ("train", "val"):
        name = f"_test_augment_{split}_{root.name}"
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name, {}, str(root / "annotations" / f"instances_{split}.json"), str(root / split)
            )
        names[split] = name
    return names


def _train(config, opts, resume=False):
    args = ["--config-file", config] + (["--resume"] if resume else []) + list(opts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_net.main(train_net.argument_parser().parse_args(args))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("trick", sorted(CHECKS))
def test_augment_config_switches_it_on_trains_a_step_and_evaluates(trick, shapes, tmp_path, sephnet_cfg):
    opts = SMALL + [
        "DATASETS.TRAIN", f"('{shapes['train']}',)",
        "DATASETS.TEST", f"('{shapes['val']}',)",
        "OUTPUT_DIR", str(tmp_path),
    ]
    cfg = sephnet_cfg()
    cfg.merge_from_file(CONFIGS[trick])
    cfg.merge_from_list(opts)
    validate_sephnet_config(cfg)
    assert CHECKS[trick](cfg), trick
    # crop is detectron2's own: its loader, unchanged; the others need sephnet's mapper
    assert augment_config.any_enabled(cfg) == (trick != "crop")

    _train(CONFIGS[trick], opts)
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert "bbox/AP50" in lines[-1]  # the final evaluation on the val images
    losses = [x for x in lines if "total_loss" in x]
    assert losses and all(torch.isfinite(torch.tensor(x["total_loss"])) for x in losses)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "core", reason="exact resume is a feature of the core's trainer and loader")
def test_resume_with_mixup_and_mosaic_ends_with_the_same_weights(shapes, tmp_path):
    opts = SMALL + [
        "DATASETS.TRAIN", f"('{shapes['train']}',)",
        "DATASETS.TEST", "()",
        "MODEL.MASK_ON", "True",
        "MODEL.SEPH.AUGMENT.MIXUP.PROB", "0.5",
        "MODEL.SEPH.AUGMENT.MOSAIC.PROB", "0.5",
        "SOLVER.MAX_ITER", "4",
        "SOLVER.CHECKPOINT_PERIOD", "2",
    ]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _train(CONFIGS["mosaic"], opts + ["OUTPUT_DIR", str(whole)])
    resumed.mkdir()
    shutil.copy(whole / "model_0000001.pth", resumed / "model_0000001.pth")
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    _train(CONFIGS["mosaic"], opts + ["OUTPUT_DIR", str(resumed)], resume=True)
    final = [torch.load(d / "model_final.pth", map_location="cpu", weights_only=False)["model"] for d in (whole, resumed)]
    assert final[0].keys() == final[1].keys()
    for name in final[0]:
        assert torch.equal(final[0][name], final[1][name]), name
    first = torch.load(whole / "model_0000001.pth", map_location="cpu", weights_only=False)["model"]
    assert any(not torch.equal(first[n], final[0][n]) for n in first)  # it did train after the checkpoint
