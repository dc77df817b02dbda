"""End to end: train_net.main trains the quickstart config a few iterations on a tiny
shapes dataset, writes the expected output folder, and --eval-only reproduces the
final evaluation."""
import glob
import json
import os

import pytest
import torch

import train_net
from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.data import ShapesParams, generate_shapes
from sephnet.engine.preemption import PreemptionCheckpoint

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quickstart",
                      "mask_rcnn_R_18_FPN_shapes.yaml")


def _register_tiny_shapes(root):
    generate_shapes(str(root), ShapesParams(num_train=8, num_val=3))
    names = {}
    for split in ("train", "val"):
        name = f"_test_train_net_shapes_{split}_{os.path.basename(root)}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(root / "annotations" / f"instances_{split}.json"),
                                    str(root / split))
        names[split] = name
    return names


def _args(*extra):
    return train_net.argument_parser().parse_args(["--config-file", CONFIG, *extra])


class _RecordingTrainer:
    """Stands in for train_net.Trainer: records the hooks main() registers."""

    def __init__(self, cfg):
        self.checkpointer = object()
        self.registered = []

    def register_hooks(self, hooks):
        self.registered.extend(hooks)

    def resume_or_load(self, resume):
        pass

    def train(self):
        return self.registered


@pytest.mark.parametrize("flags, expected", [
    ([], None),
    (["--best-metric", "bbox/AP"], ("bbox/AP", "max")),
    (["--best-metric", "segm/AP50", "--best-mode", "min"], ("segm/AP50", "min")),
])
def test_best_metric_flag_registers_best_checkpointer(monkeypatch, flags, expected):
    cfg = train_net.get_cfg()
    cfg.TEST.EVAL_PERIOD = 7
    monkeypatch.setattr(train_net, "setup", lambda args: cfg)
    monkeypatch.setattr(train_net, "Trainer", _RecordingTrainer)
    registered = train_net.main(_args(*flags))
    assert isinstance(registered.pop(), PreemptionCheckpoint)  # always registered, last
    if expected is None:
        assert registered == []
        return
    (hook,) = registered
    assert isinstance(hook, train_net.hooks.BestCheckpointer)
    assert (hook._val_metric, hook._compare(2, 1), hook._period) == (
        expected[0], expected[1] == "max", 7
    )


@pytest.mark.slow
def test_quickstart_trains_writes_outputs_and_eval_only_reproduces(tmp_path):
    names = _register_tiny_shapes(tmp_path / "shapes")
    out = tmp_path / "out"
    overrides = [
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DATASETS.TEST", f"('{names['val']}',)",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "4",
        "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "TEST.EVAL_PERIOD", "4",
        # a barely trained model: keep every detection so that the metrics are defined
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.DETECTIONS_PER_IMAGE", "10",
        # the final evaluation and --eval-only also evaluate under TTA (2 sizes x flip)
        "TEST.AUG.ENABLED", "True",
        "TEST.AUG.MIN_SIZES", "(96, 128)",
        "TEST.AUG.MAX_SIZE", "192",
    ]
    # One intra-op thread: the test suite runs one test process per core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_then_evaluate(out, overrides)
    finally:
        torch.set_num_threads(threads)


def _train_then_evaluate(out, overrides):
    train_net.main(_args(*overrides))

    for name in ("config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_0000001.pth",
                 "model_0000003.pth", "model_final.pth", "inference/coco_instances_results.json"):
        assert (out / name).is_file(), name
    assert glob.glob(str(out / "events.out.tfevents.*"))
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert "SOLVER:" in (out / "config.yaml").read_text()
    log = (out / "log.txt").read_text()
    assert log.count("sephnet backend: ") == 1  # sephnet's logger writes there, once
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    assert [x["iteration"] for x in lines if "total_loss" in x][-1] == 3
    final = lines[-1]
    assert "bbox/AP50" in final and "segm/AP" in final
    assert "bbox_TTA/AP50" in final and "segm_TTA/AP" in final
    assert (out / "inference_TTA" / "coco_instances_results.json").is_file()
    train_predictions = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert train_predictions, "the evaluated model produced no detections"

    results = train_net.main(_args("--eval-only", *overrides, "MODEL.WEIGHTS", str(out / "model_final.pth")))
    for task in ("bbox", "segm", "bbox_TTA", "segm_TTA"):
        for metric, value in results[task].items():
            assert final[f"{task}/{metric}"] == pytest.approx(value, nan_ok=True), (task, metric)
    # --eval-only appends its results to metrics.json in the same flattened form
    appended = json.loads((out / "metrics.json").read_text().splitlines()[-1])
    assert appended["bbox_TTA/AP"] == pytest.approx(results["bbox_TTA"]["AP"], nan_ok=True)
    eval_predictions = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert eval_predictions == train_predictions


def test_train_loader_stitches_batches_when_asked(monkeypatch):
    from sephnet.backend import Boxes, Instances
    from sephnet.data import train_loader

    def item(value):
        inst = Instances((8, 8))
        inst.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
        inst.gt_classes = torch.tensor([value])
        return {"image": torch.full((3, 8, 8), value, dtype=torch.uint8), "instances": inst}

    batches = [[item(1), item(2)]] * 3
    monkeypatch.setattr(train_loader, "build_augmented_loader", lambda cfg: batches)
    cfg = train_net.setup(_args("MODEL.MASK_ON", "False", "MODEL.SEPH.STITCH.PROB", "1.0"))
    for batch in train_net.Trainer.build_train_loader(cfg):
        counts = sorted(len(x["instances"]) for x in batch)
        assert counts == [1, 2]  # one image now holds the pair's two boxes
    cfg = train_net.setup(_args("MODEL.MASK_ON", "False"))
    assert train_net.Trainer.build_train_loader(cfg) is batches
