"""analyze_model: FLOP and parameter counts of the quickstart model against hand formulas."""
import pytest
import torch

from sephnet.tools.analyze_model import analyze, default_input_size, full_load_config, main
from sephnet.tools.config_loading import load_config

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"


@pytest.fixture(scope="module")
def quickstart_counts():
    cfg = load_config(QUICKSTART)
    return cfg, analyze(cfg, ["flop", "parameter"], (64, 96))


def test_head_flops_equal_hand_counts_at_full_load(quickstart_counts):
    cfg, results = quickstart_counts
    flops = results["flop"]["by_module"]
    c = cfg.MODEL.FPN.OUT_CHANNELS  # 64
    proposals = cfg.MODEL.RPN.POST_NMS_TOPK_TEST  # 200: full load keeps them all
    detections = cfg.TEST.DETECTIONS_PER_IMAGE  # 100
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES  # 3
    fc, res = cfg.MODEL.ROI_BOX_HEAD.FC_DIM, cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    # two FCs on the pooled 64 x 7 x 7 features of every proposal
    assert flops["roi_heads"] == pytest.approx(
        proposals * (c * res * res * fc + fc * fc)  # box head
        + proposals * fc * ((k + 1) + 4 * k)  # class scores and class-specific deltas
        + detections * (
            2 * (14 * 14) * c * c * 9  # two 3x3 mask convs on 14 x 14
            + (14 * 14) * c * c * 2 * 2  # 2x2 stride-2 deconv, counted per input pixel
            + (28 * 28) * c * k  # 1x1 mask predictor
        ), rel=0, abs=0)
    # the RPN's 3x3 conv and two 1x1 convs on every level: p2-p5 of the 64 x 96 input, and
    # p6 pooled from p5 (2 x 3) with stride 2, i.e. 1 x 2 cells
    cells = sum((64 // s) * (96 // s) for s in (4, 8, 16, 32)) + 1 * 2
    anchors = 3
    assert flops["proposal_generator"] == cells * (c * c * 9 + c * anchors + c * 4 * anchors)


def test_parameter_count_is_the_sum_of_tensor_sizes(quickstart_counts):
    cfg, results = quickstart_counts
    from sephnet.backend import build_model

    model = build_model(full_load_config(cfg))
    assert results["parameter"]["total"] == sum(p.numel() for p in model.parameters())
    assert "| model " in results["parameter"]["table"]


def test_default_input_size_is_the_test_resize_of_a_4_3_image():
    cfg = load_config("configs/Base-RCNN-FPN.yaml", device="cpu")
    assert default_input_size(cfg) == (800, 1067)
    assert default_input_size(cfg, aspect=2.0) == (667, 1333)  # long side capped at 1333


def test_cli_reports_totals_and_rejects_a_missing_config(capsys):
    assert main(["--config-file", QUICKSTART, "--tasks", "parameter"]) == 0
    out = capsys.readouterr().out
    assert "Parameters: 12.39 M" in out
    assert main(["--config-file", "nope.yaml"]) == 1
    assert "--config-file 'nope.yaml' does not exist." in capsys.readouterr().err
    assert main(["--config-file", QUICKSTART, "--opts", "MODEL.SEPH.FAST_INFERENCE.ENABLED",
                 "True"]) == 1
    assert ("MODEL.SEPH.FAST_INFERENCE.ENABLED is True, but analyze_model counts the plain "
            "model; drop the key.") in capsys.readouterr().err


def test_cuda_config_on_a_machine_without_cuda_is_refused_with_the_fix():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="MODEL.DEVICE='cuda' but CUDA is not available here; "
                                         "add `MODEL.DEVICE cpu` to the overrides."):
        load_config("configs/Base-RCNN-FPN.yaml")


def test_dense_detector_head_flops_equal_hand_counts():
    # RetinaNet (a DenseDetector, no ``inference`` method) through the same adapter
    cfg = load_config("configs/shapes/retinanet_R_18_FPN_shapes.yaml",
                      ["MODEL.RETINANET.NORM", "", "MODEL.RETINANET.NUM_CONVS", "1"])
    flops = analyze(cfg, ["flop"], (64, 96))["flop"]["by_module"]
    c = cfg.MODEL.FPN.OUT_CHANNELS
    k, anchors = cfg.MODEL.RETINANET.NUM_CLASSES, 9
    # P3-P5 of the 64 x 96 input, then P6 (1 x 2) and P7 (1 x 1) by stride-2 3x3 convs
    cells = sum((64 // s) * (96 // s) for s in (8, 16, 32)) + 1 * 2 + 1 * 1
    # one tower conv per subnet, then the 3x3 class and box predictors
    assert flops["head"] == cells * 9 * c * (2 * c + anchors * k + anchors * 4)
