"""Exact resume through train_net for the models and tricks with their own training state: a
run resumed from its iteration-1 checkpoint ends with the weights of the uninterrupted run.

- model tricks: GHM momentum counts (checkpointed buffers), OHEM, DropBlock (global RNG,
  restored from the checkpoint), Mish heads and the validation-loss hook;
- SSD: its random expand / photometric augmentation;
- batch stitching: its random generator, resumed from the checkpoint with the loader's state;
- DETR: AdamW state, global-norm clipping and the transformer's dropout.
"""
import os
import shutil

import pytest
import torch

import train_net
from sephnet import backend
from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.data import ShapesParams, generate_shapes

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "configs")

#: case -> (config under configs/, its extra overrides ("{val}": the validation set), a
#: state-dict key that shows the case's own part was trained)
CASES = {
    "model-tricks": (
        "quickstart/mask_rcnn_R_18_FPN_shapes.yaml",
        ["MODEL.ROI_HEADS.NAME", "SephStandardROIHeads",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
         "MODEL.SEPH.SAMPLER.NAME", "OHEMROISampler",
         "MODEL.SEPH.ROI_LOSS.CLS_TYPE", "ghm_c",
         "MODEL.SEPH.ROI_LOSS.BOX_TYPE", "ghm_r",
         "MODEL.SEPH.ROI_LOSS.GHM_MOMENTUM", "0.75",
         "MODEL.SEPH.DROPBLOCK.HEADS", "['mask']",
         "MODEL.SEPH.DROPBLOCK.DROP_PROB", "0.3",
         "MODEL.SEPH.HEAD_ACTIVATION.NAME", "Mish",
         "MODEL.SEPH.VAL_LOSS.ENABLED", "True",
         "MODEL.SEPH.VAL_LOSS.DATASETS", "('{val}',)",
         "MODEL.SEPH.VAL_LOSS.PERIOD", "20"],
        "roi_heads.box_predictor.cls_loss.ghm.acc_count",
    ),
    "stitch": (
        "quickstart/mask_rcnn_R_18_FPN_shapes.yaml",
        ["MODEL.MASK_ON", "False", "MODEL.SEPH.STITCH.PROB", "0.5"],
        "roi_heads.box_predictor.cls_score.weight",
    ),
    "ssd": (
        "shapes/ssd_R_18_shapes.yaml",
        ["MODEL.SEPH.SSD.AUGMENT.EXPAND_PROB", "1.0",
         "MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB", "1.0"],
        "head.cls_convs.0.weight",
    ),
    "detr": (
        "shapes/detr_shapes.yaml",
        ["SOLVER.STEPS", "(3,)", "MODEL.SEPH.DETR.DROPOUT", "0.1"],
        "query_embed.weight",
    ),
}


def _register(root, tmp_name):
    names = {}
    for split in ("train", "val"):
        names[split] = f"_test_exact_resume_{split}_{tmp_name}"
        if names[split] not in DatasetCatalog.list():
            register_coco_instances(names[split], {}, str(root / "annotations" / f"instances_{split}.json"),
                                    str(root / split))
    return names


def _main(config, opts, out, names, *extra):
    args = train_net.argument_parser().parse_args([
        "--config-file", os.path.join(CONFIGS, config), *extra,
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "4",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        *[o.format(val=names["val"]) for o in opts],
    ])
    train_net.main(args)


@pytest.mark.slow
@pytest.mark.skipif(
    backend.BACKEND != "core",
    reason="exact resume (RNG states and loader position in checkpoints) is the core's; "
    "detectron2 v0.6 checkpoints hold neither",
)
@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_run_ends_with_identical_weights(case, tmp_path):
    config, opts, own_key = CASES[case]
    root = tmp_path / "shapes"
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2))
    names = _register(root, tmp_path.name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _main(config, opts, tmp_path / "straight", names)
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        shutil.copy(tmp_path / "straight" / "model_0000001.pth", resumed)
        (resumed / "last_checkpoint").write_text("model_0000001.pth")
        _main(config, opts, resumed, names, "--resume")
    finally:
        torch.set_num_threads(threads)

    straight = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=False)["model"]
    again = torch.load(resumed / "model_final.pth", weights_only=False)["model"]
    # it did resume (a fresh start with the same seed would also end with the same weights)
    assert "Starting training from iteration 2" in (resumed / "log.txt").read_text()
    assert straight.keys() == again.keys() and own_key in straight
    different = [key for key in straight if not torch.equal(straight[key], again[key])]
    assert different == []
    if case == "stitch":  # resumed from the loader's own state, not by replaying batches
        state = torch.load(resumed / "model_0000001.pth", weights_only=False)["trainer"]
        assert state["data_loader"]["loader"]["batches"] == 2
        assert "stitch_rng" in state["data_loader"]
