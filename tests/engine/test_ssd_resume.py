"""SSD through train_net: a run resumed from a checkpoint ends with the weights of the
uninterrupted run (SSD's random augmentation included)."""
import os
import shutil

import pytest
import torch

import train_net
from sephnet import backend
from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.data import ShapesParams, generate_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "shapes", "ssd_R_18_shapes.yaml")


def _main(out, train_name, *extra):
    args = train_net.argument_parser().parse_args([
        "--config-file", CONFIG, *extra,
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{train_name}',)",
        "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "4",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "MODEL.SEPH.SSD.AUGMENT.EXPAND_PROB", "1.0",
        "MODEL.SEPH.AUGMENT.PHOTOMETRIC.PROB", "1.0",
    ])
    train_net.main(args)


@pytest.mark.slow
@pytest.mark.skipif(
    backend.BACKEND != "core",
    reason="exact resume (RNG states and loader position in checkpoints) is the core's; "
    "detectron2 v0.6 checkpoints hold neither",
)
def test_resumed_ssd_run_ends_with_identical_weights(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=1))
    name = f"_test_ssd_resume_{tmp_path.name}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(root / "annotations" / "instances_train.json"), str(root / "train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _main(tmp_path / "straight", name)
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        shutil.copy(tmp_path / "straight" / "model_0000001.pth", resumed)
        (resumed / "last_checkpoint").write_text("model_0000001.pth")
        _main(resumed, name, "--resume")
    finally:
        torch.set_num_threads(threads)

    straight = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=False)["model"]
    again = torch.load(resumed / "model_final.pth", weights_only=False)["model"]
    assert straight.keys() == again.keys() and "head.cls_convs.0.weight" in straight
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
