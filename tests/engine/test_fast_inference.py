"""The inference fast path: folding by value, and the fast quickstart and sephv14_10 models'
detections equal the plain models' within 1e-2 px and 1e-4 score, with every fp32 speed-up
(folding, threaded ROIAlign, EvoNormS0 for inference, top-k NMS) in place."""
import copy

import pytest
import torch

from sephnet import validate_sephnet_config
from sephnet.backend import Conv2d, FrozenBatchNorm2d, ROIPooler, build_model
from sephnet.engine.fast_inference import (
    fast_inference_model,
    fold_frozen_batchnorm,
    optimize_for_inference,
)
from sephnet.layers.evonorm import EvoNormS0
from sephnet.layers.evonorm_inference import EvoNormS0Inference
from sephnet.layers.threaded_roi_align import ThreadedROIAlign

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"
SEPHV14_10 = "configs/coco/Mask-RCNN-FPN-sephv14_10.yaml"


def _frozen_bn(channels, generator):
    norm = FrozenBatchNorm2d(channels)
    norm.weight.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) * 0.5 + 0.5)
    norm.bias.copy_(torch.randn(channels, generator=generator, dtype=torch.float64) * 0.1)
    norm.running_mean.copy_(torch.randn(channels, generator=generator, dtype=torch.float64) * 0.1)
    norm.running_var.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5)
    return norm


@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_conv_computes_conv_then_frozen_bn(conv_bias):
    g = torch.Generator().manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, bias=conv_bias, norm=_frozen_bn(4, g),
                  activation=torch.relu).double()
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.relu(conv.norm(torch.nn.functional.conv2d(
            x, conv.weight, conv.bias, padding=1)))
        assert fold_frozen_batchnorm(conv) == 1
        assert conv.norm is None and conv.bias is not None
        torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_training_mode_batchnorm_and_other_norms_are_left_alone():
    model = torch.nn.Sequential(Conv2d(3, 4, 1, norm=torch.nn.BatchNorm2d(4)),
                                Conv2d(4, 4, 1, norm=torch.nn.GroupNorm(2, 4)))
    assert fold_frozen_batchnorm(model) == 0  # BN is in training mode, GN never folds
    model.eval()
    assert fold_frozen_batchnorm(model) == 1
    assert model[0].norm is None and isinstance(model[1].norm, torch.nn.GroupNorm)


def _cfg(sephnet_cfg, *opts):
    cfg = sephnet_cfg()
    cfg.merge_from_file(QUICKSTART)
    # frozen BN in the backbone, as in detectron2's COCO recipes, so that folding happens
    # and full load (score thresholds 0, nothing suppressed): DETECTIONS_PER_IMAGE detections
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", "",
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RPN.NMS_THRESH", "1.0",
                         "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0", *opts])
    validate_sephnet_config(cfg)
    return cfg


def _sephv14_10_cfg(sephnet_cfg):
    """The sephv14_10 recipe (EvoNormS0 FPN and heads, sephnet's predictor, frozen-BN ResNet)
    at ResNet-18 and 32 channels, thresholds for full load. EvoNormS0 with 4 groups: with the
    recipe's 32 an untrained 32-channel model normalises single channels of 2x2 maps, which
    magnifies float rounding far beyond the tolerances."""
    cfg = sephnet_cfg()
    cfg.merge_from_file(SEPHV14_10)
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "32",
                         "MODEL.SEPH.BOX_HEAD.CONV_DIM", "32", "MODEL.SEPH.BOX_HEAD.FC_DIM", "64",
                         "MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                         "0.0", "MODEL.RPN.POST_NMS_TOPK_TEST", "300",
                         "MODEL.SEPH.EVONORM.GROUPS", "4"])
    validate_sephnet_config(cfg)
    return cfg


def assert_same_detections(plain, fast):
    """One-to-one: same class, boxes within 1e-2 px, scores within 1e-4 (paired by matching:
    rounding may swap detections of near-equal score)."""
    assert len(plain) == len(fast) > 0
    close = (((plain.pred_boxes.tensor[:, None] - fast.pred_boxes.tensor[None]).abs()
              <= 1e-2).all(dim=2)
             & ((plain.scores[:, None] - fast.scores[None]).abs() <= 1e-4)
             & (plain.pred_classes[:, None] == fast.pred_classes[None]))
    free = torch.ones(len(plain), dtype=torch.bool)
    for j in range(len(fast)):
        matches = torch.nonzero(close[:, j] & free).flatten()
        assert len(matches), f"fast detection {j} has no plain counterpart"
        free[matches[0]] = False


@pytest.mark.parametrize("recipe", ["quickstart", "sephv14_10"])
def test_fast_path_detections_equal_the_plain_models(sephnet_cfg, recipe):
    cfg = _cfg(sephnet_cfg) if recipe == "quickstart" else _sephv14_10_cfg(sephnet_cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial frozen statistics everywhere
        if isinstance(m, FrozenBatchNorm2d):
            m.load_state_dict(_frozen_bn(m.num_features, g).float().state_dict())
    fast = optimize_for_inference(copy.deepcopy(model))
    # the pixel mean plus small noise keeps untrained activations in range
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    image = mean + torch.randn(3, 96, 128, generator=g) * 5
    with torch.no_grad():
        (plain,) = model([{"image": image}])
        (quick,) = fast([{"image": image}])
    assert_same_detections(plain["instances"], quick["instances"])
    if recipe == "quickstart":
        assert len(quick["instances"]) == cfg.TEST.DETECTIONS_PER_IMAGE
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in fast.modules()) == 0
    # every speed-up of the fp32 path took hold
    poolers = [m for m in fast.modules() if isinstance(m, ROIPooler)]
    assert poolers and all(isinstance(p, ThreadedROIAlign) for pooler in poolers
                           for p in pooler.level_poolers)
    evonorms = [type(m) for m in fast.modules() if isinstance(m, EvoNormS0)]
    assert evonorms == ([EvoNormS0Inference] * len(evonorms))
    assert (len(evonorms) > 0) == (recipe == "sephv14_10")
    predictor = fast.roi_heads.box_predictor
    assert {"inference", "select_detections"} & set(vars(predictor))  # top-k NMS in place


def test_bf16_path_runs_under_autocast_and_pools_contiguous_float_maps(sephnet_cfg):
    model = build_model(_cfg(sephnet_cfg)).eval()
    pooled_maps = []
    model.roi_heads.box_pooler.register_forward_pre_hook(
        lambda module, args: pooled_maps.extend(args[0]))
    fast = optimize_for_inference(model, bf16=True)
    with torch.no_grad():
        (out,) = fast([{"image": torch.rand(3, 64, 64) * 255}])
    assert out["instances"].pred_boxes.tensor.dtype == torch.float32
    # the backbone ran channels-last in bfloat16; the poolers get NCHW float32 maps
    assert len(pooled_maps) == 4
    assert all(x.dtype == torch.float32 and x.is_contiguous() for x in pooled_maps)


def test_config_copies_the_model_and_refuses_keys_without_enabled(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, "MODEL.SEPH.FAST_INFERENCE.ENABLED", "True")
    model = build_model(cfg)
    assert fast_inference_model(cfg, model) is not model
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())  # untouched
    assert fast_inference_model(_cfg(sephnet_cfg), model) is model
    with pytest.raises(ValueError, match="MODEL.SEPH.FAST_INFERENCE.BF16 is True but "
                                         "MODEL.SEPH.FAST_INFERENCE.ENABLED is False"):
        _cfg(sephnet_cfg, "MODEL.SEPH.FAST_INFERENCE.BF16", "True")
