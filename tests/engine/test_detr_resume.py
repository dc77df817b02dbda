"""Exact resume of a DETR run through train_net: AdamW state, global-norm clipping and the
transformer's dropout (global RNG, restored from the checkpoint) included."""
import os
import shutil

import pytest
import torch

import train_net
from sephnet import backend
from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.data import ShapesParams, generate_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "shapes", "detr_shapes.yaml")


def _main(out, train, *extra):
    args = train_net.argument_parser().parse_args([
        "--config-file", CONFIG, *extra,
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{train}',)",
        "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "4",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "(3,)",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "MODEL.SEPH.DETR.DROPOUT", "0.1",
    ])
    train_net.main(args)


@pytest.mark.slow
@pytest.mark.skipif(
    backend.BACKEND != "core",
    reason="exact resume (RNG states and loader position in checkpoints) is the core's; "
    "detectron2 v0.6 checkpoints hold neither",
)
def test_resumed_detr_run_ends_with_identical_weights(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2))
    train = f"_test_detr_resume_train_{tmp_path.name}"
    if train not in DatasetCatalog.list():
        register_coco_instances(train, {}, str(root / "annotations" / "instances_train.json"), str(root / "train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _main(tmp_path / "straight", train)
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        shutil.copy(tmp_path / "straight" / "model_0000001.pth", resumed)
        (resumed / "last_checkpoint").write_text("model_0000001.pth")
        _main(resumed, train, "--resume")
    finally:
        torch.set_num_threads(threads)

    straight = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=False)
    again = torch.load(resumed / "model_final.pth", weights_only=False)
    assert straight["model"].keys() == again["model"].keys()
    assert "query_embed.weight" in straight["model"]
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], again["model"][key]), key
