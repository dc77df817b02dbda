"""Exact resume with the model tricks on: GHM momentum counts (checkpointed buffers), OHEM,
DropBlock (global RNG, restored from the checkpoint), Mish heads and the validation hook."""
import os
import shutil

import pytest
import torch

import train_net
from sephnet import backend
from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.data import ShapesParams, generate_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")


def _main(out, names, *extra):
    args = train_net.argument_parser().parse_args([
        "--config-file", CONFIG, *extra,
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "4",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "MODEL.ROI_HEADS.NAME", "SephStandardROIHeads",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
        "MODEL.SEPH.SAMPLER.NAME", "OHEMROISampler",
        "MODEL.SEPH.ROI_LOSS.CLS_TYPE", "ghm_c",
        "MODEL.SEPH.ROI_LOSS.BOX_TYPE", "ghm_r",
        "MODEL.SEPH.ROI_LOSS.GHM_MOMENTUM", "0.75",
        "MODEL.SEPH.DROPBLOCK.HEADS", "['mask']",
        "MODEL.SEPH.DROPBLOCK.DROP_PROB", "0.3",
        "MODEL.SEPH.HEAD_ACTIVATION.NAME", "Mish",
        "MODEL.SEPH.VAL_LOSS.ENABLED", "True",
        "MODEL.SEPH.VAL_LOSS.DATASETS", f"('{names['val']}',)",
        "MODEL.SEPH.VAL_LOSS.PERIOD", "20",
    ])
    train_net.main(args)


@pytest.mark.slow
@pytest.mark.skipif(
    backend.BACKEND != "core",
    reason="exact resume (RNG states and loader position in checkpoints) is the core's; "
    "detectron2 v0.6 checkpoints hold neither",
)
def test_resumed_run_with_model_tricks_ends_with_identical_weights(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2))
    names = {}
    for split in ("train", "val"):
        names[split] = f"_test_tricks_resume_{split}_{tmp_path.name}"
        if names[split] not in DatasetCatalog.list():
            register_coco_instances(
                names[split], {}, str(root / "annotations" / f"instances_{split}.json"),
                str(root / split),
            )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _main(tmp_path / "straight", names)
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        shutil.copy(tmp_path / "straight" / "model_0000001.pth", resumed)
        (resumed / "last_checkpoint").write_text("model_0000001.pth")
        _main(resumed, names, "--resume")
    finally:
        torch.set_num_threads(threads)

    straight = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=False)["model"]
    again = torch.load(resumed / "model_final.pth", weights_only=False)["model"]
    assert straight.keys() == again.keys()
    assert "roi_heads.box_predictor.cls_loss.ghm.acc_count" in straight
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
