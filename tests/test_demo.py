"""The demo command: config and path handling, the real predictor end to end, and what
is drawn for known predictions."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import sephnet.demo as demo
from sephnet.backend import Boxes, Instances
from sephnet.layers.threaded_roi_align import ThreadedROIAlign

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
CONFIG = os.path.join(CONFIGS, "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")


def _images(folder, count=2, size=(48, 64)):
    """Write ``count`` small PNGs with distinct blue and red channels; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        bgr = np.zeros(size + (3,), dtype=np.uint8)
        bgr[:, :, 0] = 200  # blue
        bgr[:, :, 2] = 40 + 10 * i  # red
        path = str(folder / f"img{i}.png")
        cv2.imwrite(path, bgr)
        paths.append(path)
    return paths


def test_setup_cfg_applies_threshold_after_opts():
    args = demo.get_parser().parse_args(
        ["--config-file", CONFIG, "--input", "x.png", "--output", "o.png",
         "--confidence-threshold", "0.3", "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.9",
         "TEST.DETECTIONS_PER_IMAGE", "7"]
    )
    cfg = demo.setup_cfg(args)
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.3
    assert cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.3
    # a Mask R-CNN config leaves PanopticFPN's key at its default (it is refused where unread)
    assert cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH == 0.5
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 7 and cfg.is_frozen()
    args.confidence_threshold = 1.5
    with pytest.raises(ValueError, match=r"threshold=1.5; expected a score in \[0, 1\]"):
        demo.setup_cfg(args)


def test_setup_cfg_reads_sephnet_configs_like_train_net():
    seph = os.path.join(CONFIGS, "coco", "Mask-RCNN-FPN-sephv14_10.yaml")
    args = demo.get_parser().parse_args(["--config-file", seph, "--input", "x", "--output", "o"])
    cfg = demo.setup_cfg(args)
    assert "SEPH" in cfg.MODEL and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.5


def test_inputs_and_outputs(tmp_path):
    a, b = _images(tmp_path / "in")
    assert demo.expand_inputs([str(tmp_path / "in" / "img*.png")]) == [a, b]
    assert demo.expand_inputs([b, a]) == [b, a]
    with pytest.raises(FileNotFoundError, match=r"--input '.*nothing\*\.png' matches no file"):
        demo.expand_inputs([str(tmp_path / "nothing*.png")])

    single = str(tmp_path / "out" / "drawn.png")
    assert demo.output_paths([a], single) == [single]
    folder = str(tmp_path / "several")
    assert demo.output_paths([a, b], folder) == [
        os.path.join(folder, "img0.png"), os.path.join(folder, "img1.png")
    ]
    assert os.path.isdir(folder)
    # an existing folder is a folder even for one input
    assert demo.output_paths([a], folder) == [os.path.join(folder, "img0.png")]
    (tmp_path / "other").mkdir()
    twin = str(tmp_path / "other" / "img0.png")
    with pytest.raises(ValueError, match=r"Several inputs are named \['img0.png'\]"):
        demo.output_paths([a, twin], folder)


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast path"])
def test_real_predictor_with_threshold_one_leaves_images_unchanged(tmp_path, monkeypatch, fast):
    # No score exceeds 1.0, so the drawing must be the input, pixel for pixel; this runs
    # the whole path (config, DefaultPredictor on a from-scratch model, Visualizer, save),
    # through the fast path when its key is set.
    models = []
    real = demo.fast_inference_model
    monkeypatch.setattr(demo, "fast_inference_model",
                        lambda cfg, model: models.append(real(cfg, model)) or models[-1])
    paths = _images(tmp_path / "in")
    written = demo.main(
        ["--config-file", CONFIG, "--input", str(tmp_path / "in" / "*.png"),
         "--output", str(tmp_path / "out"), "--confidence-threshold", "1.0",
         "--opts", "MODEL.WEIGHTS", "", "MODEL.SEPH.FAST_INFERENCE.ENABLED", str(fast)]
    )
    assert written == [str(tmp_path / "out" / "img0.png"), str(tmp_path / "out" / "img1.png")]
    for src, dst in zip(paths, written):
        np.testing.assert_array_equal(cv2.imread(dst), cv2.imread(src))
    threaded = [m for m in models[0].modules() if isinstance(m, ThreadedROIAlign)]
    assert bool(threaded) == fast


class _FakePredictor:
    """Returns one square instance of class 1 ("square") and records its inputs."""

    seen = []

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = None  # passed through fast_inference_model (unchanged: the key is off)

    def __call__(self, image_bgr):
        _FakePredictor.seen.append(image_bgr.copy())
        h, w = image_bgr.shape[:2]
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor([[10.0, 8.0, 50.0, 60.0]]))
        inst.scores = torch.tensor([0.97])
        inst.pred_classes = torch.tensor([1])
        masks = torch.zeros(1, h, w, dtype=torch.bool)
        masks[0, 12:56, 14:46] = True
        inst.pred_masks = masks
        return {"instances": inst}


def test_known_prediction_is_drawn_inside_its_mask_only(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DefaultPredictor", _FakePredictor)
    _FakePredictor.seen.clear()
    (src,) = _images(tmp_path / "in", count=1, size=(80, 96))
    out = str(tmp_path / "drawn.png")
    assert demo.main(["--config-file", CONFIG, "--input", src, "--output", out]) == [out]

    original = cv2.imread(src)
    # the predictor gets BGR, as detectron2's DefaultPredictor expects
    np.testing.assert_array_equal(_FakePredictor.seen[0], original)
    drawn = cv2.imread(out).astype(int)
    assert drawn.shape == original.shape
    changed = np.abs(drawn - original).max(axis=2) > 0
    assert changed[30:50, 18:42].all()  # mask interior (below the label): tinted
    assert not changed[64:, :].any() and not changed[:4, :].any()  # below / above the box
    assert not changed[30:, 54:].any() and not changed[:, :6].any()  # beside the box
    assert changed[8, 20:40].any() and changed[60, 20:40].any()  # the box's edges

    big = str(tmp_path / "big.png")
    demo.main(["--config-file", CONFIG, "--input", src, "--output", big, "--scale", "2"])
    assert cv2.imread(big).shape == (160, 192, 3)
    with pytest.raises(ValueError, match=r"--scale=0.0; expected a positive number"):
        demo.main(["--config-file", CONFIG, "--input", src, "--output", big, "--scale", "0"])


@pytest.mark.slow  # subprocesses: over 10 s on 2 cores
def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sephnet.demo", "--config-file", CONFIG,
         "--input", str(tmp_path / "missing*.png"), "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=os.path.join(os.path.dirname(__file__), ".."),
        timeout=120,
    )
    assert result.returncode == 1
    assert "demo: error: --input" in result.stderr and "matches no file" in result.stderr
    assert "Traceback" not in result.stderr
