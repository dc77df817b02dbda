"""default_argument_parser, default_setup, default_writers, auto_scale_workers, test()."""
import argparse

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.engine import DefaultTrainer, default_argument_parser, default_setup, default_writers
from sephnet.d2.evaluation import DatasetEvaluator
from sephnet.d2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter


def test_argument_parser_flags_and_overrides():
    args = default_argument_parser().parse_args(
        ["--config-file", "a.yaml", "--resume", "--eval-only", "--num-gpus", "2",
         "--dist-url", "auto", "SOLVER.BASE_LR", "0.1", "MODEL.WEIGHTS", "w.pth"]
    )
    assert (args.config_file, args.resume, args.eval_only, args.num_gpus) == ("a.yaml", True, True, 2)
    assert (args.num_machines, args.machine_rank, args.dist_url) == (1, 0, "auto")
    assert args.opts == ["SOLVER.BASE_LR", "0.1", "MODEL.WEIGHTS", "w.pth"]
    default = default_argument_parser().parse_args([])
    port = int(default.dist_url.rsplit(":", 1)[1])
    assert default.dist_url.startswith("tcp://127.0.0.1:") and 2**15 + 2**14 <= port < 2**16
    assert default.opts == [] and default.num_gpus == 1


def test_default_setup_writes_config_log_and_seeds(tmp_path):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.SEED = 5
    config_file = tmp_path / "c.yaml"
    config_file.write_text("SOLVER:\n  BASE_LR: 0.5\n")
    cfg.merge_from_file(str(config_file))
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=str(config_file), eval_only=False))
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))
    assert (tmp_path / "out" / "config.yaml").read_text() == cfg.dump()
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 1" in log
    assert "BASE_LR: 0.5" in log


def test_default_writers(tmp_path):
    writers = default_writers(str(tmp_path / "w"), 10)
    assert [type(w) for w in writers] == [CommonMetricPrinter, JSONWriter, TensorboardXWriter]
    for w in writers:
        w.close()


def test_auto_scale_workers_by_hand():
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    cfg.SOLVER.MAX_ITER = 5000
    cfg.SOLVER.WARMUP_ITERS = 100
    cfg.SOLVER.STEPS = (4000,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.EVAL_PERIOD = 600
    cfg.freeze()
    new = DefaultTrainer.auto_scale_workers(cfg, 16)
    s = new.SOLVER
    assert (s.IMS_PER_BATCH, s.MAX_ITER, s.WARMUP_ITERS, s.STEPS, s.CHECKPOINT_PERIOD) == (32, 2500, 50, (2000,), 500)
    assert s.BASE_LR == pytest.approx(0.2) and s.REFERENCE_WORLD_SIZE == 16
    assert new.TEST.EVAL_PERIOD == 300 and new.is_frozen()
    assert cfg.SOLVER.IMS_PER_BATCH == 16  # the input is not modified
    assert DefaultTrainer.auto_scale_workers(cfg, 8) is cfg
    cfg2 = cfg.clone()
    cfg2.defrost()
    cfg2.SOLVER.IMS_PER_BATCH = 12
    with pytest.raises(ValueError, match="REFERENCE_WORLD_SIZE"):
        DefaultTrainer.auto_scale_workers(cfg2, 4)


def test_test_checks_evaluator_count_and_build_evaluator_is_abstract():
    cfg = get_cfg()
    cfg.DATASETS.TEST = ("a", "b")
    with pytest.raises(ValueError, match="2 test datasets"):
        DefaultTrainer.test(cfg, torch.nn.Identity(), [DatasetEvaluator()])
    with pytest.raises(NotImplementedError, match="build_evaluator"):
        DefaultTrainer.build_evaluator(cfg, "a")


def test_default_predictor_returns_instances_in_image_coordinates():
    import os

    from sephnet.d2.engine import DefaultPredictor

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(root, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.DATASETS.TEST = ()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    image = (torch.rand(100, 140, 3) * 255).to(torch.uint8).numpy()
    cfg.INPUT.FORMAT = "RGB"
    torch.manual_seed(0)
    out_rgb = DefaultPredictor(cfg)(image[:, :, ::-1].copy())["instances"]
    cfg.INPUT.FORMAT = "BGR"
    torch.manual_seed(0)
    out_bgr = DefaultPredictor(cfg)(image)["instances"]
    assert out_bgr.image_size == (100, 140)
    assert len(out_bgr) <= 5 and out_bgr.pred_masks.shape[1:] == (100, 140)
    assert torch.equal(out_rgb.pred_boxes.tensor, out_bgr.pred_boxes.tensor)
    cfg.INPUT.FORMAT = "YUV"
    with pytest.raises(ValueError, match="FORMAT"):
        DefaultPredictor(cfg)
