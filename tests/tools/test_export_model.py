"""export_model: the exported quickstart model gives PyTorch's detections on images of other
sizes than the one it was traced with (TorchScript exactly; ONNX through onnxruntime)."""
import cv2
import numpy as np
import pytest

from sephnet.tools import export_model

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    """Three images of different sizes, each with bright shapes on a noisy background."""
    root = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(96, 128), (128, 96), (80, 80)]):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(image, (10, 12), (40 + i * 5, 50), (200, 120, 60), -1)
        cv2.circle(image, (w - 25, h - 25), 15, (40, 200, 90), -1)
        paths.append(str(root / f"{i}.png"))
        cv2.imwrite(paths[-1], image)
    return paths


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch_on_every_sample(sample_images, tmp_path, fmt, capsys):
    args = ["--config-file", QUICKSTART, "--format", fmt, "--output", str(tmp_path)]
    for path in sample_images:
        args += ["--sample-image", path]
    # every proposal becomes a detection candidate: the check sees 100 detections per image
    assert export_model.main(args + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("image ")]
    assert len(rows) == 3
    for row in rows:
        assert "100 detections (export: 100)" in row
    assert lines[-1].startswith("Export check passed")
    assert (tmp_path / ("model.ts" if fmt == "torchscript" else "model.onnx")).is_file()


def test_a_missing_sample_image_is_named(tmp_path, capsys):
    assert export_model.main(["--config-file", QUICKSTART, "--format", "onnx", "--output",
                              str(tmp_path), "--sample-image", "nope.png"]) == 1
    assert "--sample-image 'nope.png' does not exist." in capsys.readouterr().err


def test_the_fast_path_key_is_refused(tmp_path, capsys):
    assert export_model.main(["--config-file", QUICKSTART, "--format", "onnx", "--output",
                              str(tmp_path), "MODEL.SEPH.FAST_INFERENCE.ENABLED", "True"]) == 1
    assert ("MODEL.SEPH.FAST_INFERENCE.ENABLED is True, but export_model exports the plain "
            "model") in capsys.readouterr().err


def test_check_failures_name_the_image_and_what_differs():
    report = [{"detections": 3, "exported_detections": 3, "pred_boxes": 0.5, "pred_classes": 0},
              {"detections": 3, "exported_detections": 2},
              {"detections": 1, "exported_detections": 1, "pred_boxes": 0.0, "pred_classes": 1}]
    assert export_model._check_failures(report, max_box_diff=0.01) == [
        "image 0: boxes differ by 0.5 px",
        "image 1: 3 detections in PyTorch, 2 exported",
        "image 2: classes differ",
    ]
