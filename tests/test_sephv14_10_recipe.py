"""The reference recipe sephv14_10 (docs/components.md#row-configs) end to end, scaled down to CPU
size.

A full GeneralizedRCNN with every component the recipe names: the seph FPN backbone
(C3-C5, EvoNormS0, P6 = strided conv + EvoNorm on C5), SephRPN labelled by ATSSMatcher
(k = 9 per cell anchor) with the GIoU RPN box loss, SephStandardROIHeads with the sephv2
head (FC cls tower / conv box tower, EvoNormS0), the balanced "new rcn sample" sampler,
square IoU class-loss weighting, Huber (smooth-L1, beta 1) box loss and top-1 inference.
It trains a few SGD steps on a tiny shapes dataset and is evaluated with COCOEvaluator
through inference_on_dataset. Widths, depth (ResNet-18), anchor sizes and ROI counts are
scaled down; everything else is the recipe's.
"""
import math
import os

import pytest
import torch

import sephnet.modeling.backbone  # noqa: F401  (registration)
import sephnet.modeling.proposal_generator  # noqa: F401
import sephnet.modeling.roi_heads  # noqa: F401
from sephnet.backend import (
    COCOEvaluator,
    DatasetCatalog,
    EventStorage,
    build_detection_test_loader,
    build_detection_train_loader,
    build_model,
    build_optimizer,
    inference_on_dataset,
    register_coco_instances,
)
from sephnet.config import validate_sephnet_config
from sephnet.data import ShapesParams, generate_shapes
from sephnet.layers.evonorm import EvoNormS0
from sephnet.modeling.matchers import ATSSMatcher
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import FCClsConvBoxHead
from sephnet.modeling.roi_heads.roi_heads import SephStandardROIHeads
from sephnet.modeling.samplers import BalancedROISampler

LEVELS = ["p3", "p4", "p5", "p6"]


def _register_tiny_shapes(root):
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2, max_objects=3))
    names = {}
    for split in ("train", "val"):
        name = f"_test_sephv14_10_shapes_{split}_{os.path.basename(os.path.dirname(root))}"
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name, {}, str(root / "annotations" / f"instances_{split}.json"), str(root / split)
            )
        names[split] = name
    return names


def _sephv14_10_cfg(sephnet_cfg, names, output_dir):
    cfg = sephnet_cfg()
    m = cfg.MODEL
    m.DEVICE = "cpu"
    m.WEIGHTS = ""
    m.MASK_ON = False  # the sephv14_10 row trained boxes only
    m.PIXEL_STD = [57.375, 57.120, 58.395]
    # Backbone: ResNet with frozen BN statistics, every stage trainable; FPN on C3-C5 with
    # EvoNormS0 (G32) outputs, sum fusion, P6 = 3x3/2 conv + EvoNorm on C5.
    m.BACKBONE.NAME = "build_seph_resnet_fpn_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = 18
    m.RESNETS.RES2_OUT_CHANNELS = 64
    m.RESNETS.NORM = "FrozenBN"
    m.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    m.FPN.OUT_CHANNELS = 64
    m.FPN.NORM = "EvoNormS0"
    m.FPN.FUSE_TYPE = "sum"
    m.SEPH.EVONORM.GROUPS = 32
    m.SEPH.FPN.TOP_BLOCK = "LastLevelStridedConvs"
    m.SEPH.FPN.TOP_BLOCK_NUM_LEVELS = 1
    # RPN on P3-P6: 3 anchors per location, ATSS labelling (k = 9 * 3), GIoU box loss.
    m.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128]]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    m.PROPOSAL_GENERATOR.NAME = "SephRPN"
    m.RPN.IN_FEATURES = LEVELS
    m.RPN.IOU_THRESHOLDS = [0.4, 0.5]
    m.RPN.BBOX_REG_LOSS_TYPE = "giou"
    m.RPN.PRE_NMS_TOPK_TRAIN = 300
    m.RPN.POST_NMS_TOPK_TRAIN = 100
    m.RPN.PRE_NMS_TOPK_TEST = 300
    m.RPN.POST_NMS_TOPK_TEST = 50
    m.SEPH.RPN.MATCHER.NAME = "ATSSMatcher"
    m.SEPH.RPN.MATCHER.TOPK_PER_CELL_ANCHOR = 9
    # ROI heads: IoU-0.5 matcher, balanced sampling (1/4 positives), sephv2 head with
    # EvoNormS0, square class-loss weighting, Huber(1) box loss, top-1 class per ROI.
    m.ROI_HEADS.NAME = "SephStandardROIHeads"
    m.ROI_HEADS.IN_FEATURES = LEVELS
    m.ROI_HEADS.NUM_CLASSES = 3
    m.ROI_HEADS.IOU_THRESHOLDS = [0.5]
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    m.ROI_HEADS.POSITIVE_FRACTION = 0.25
    m.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # a barely trained model: keep detections
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    m.ROI_BOX_HEAD.NORM = "EvoNormS0"
    m.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
    m.ROI_BOX_HEAD.SMOOTH_L1_BETA = 1.0
    m.SEPH.BOX_HEAD.NAME = "FCClsConvBoxHead"
    m.SEPH.BOX_HEAD.NUM_CONV = 4
    m.SEPH.BOX_HEAD.CONV_DIM = 64
    m.SEPH.BOX_HEAD.NUM_FC = 2
    m.SEPH.BOX_HEAD.FC_DIM = 128
    m.SEPH.SAMPLER.NAME = "BalancedROISampler"
    m.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING = "square"
    m.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST = "top1"

    cfg.DATASETS.TRAIN = (names["train"],)
    cfg.DATASETS.TEST = (names["val"],)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 192
    cfg.INPUT.MIN_SIZE_TEST = 128
    cfg.INPUT.MAX_SIZE_TEST = 192
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.005
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 32.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


@pytest.mark.slow
def test_sephv14_10_recipe_trains_and_evaluates(tmp_path, sephnet_cfg):
    names = _register_tiny_shapes(tmp_path / "shapes")
    cfg = _sephv14_10_cfg(sephnet_cfg, names, tmp_path / "out")
    validate_sephnet_config(cfg)
    cfg.freeze()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test suite runs one test process per core
    try:
        torch.manual_seed(0)
        model = build_model(cfg)
        # The recipe's components are the ones built.
        assert isinstance(model.proposal_generator.box_matcher, ATSSMatcher)
        assert isinstance(model.roi_heads, SephStandardROIHeads)
        assert isinstance(model.roi_heads.roi_sampler, BalancedROISampler)
        assert isinstance(model.roi_heads.box_head, FCClsConvBoxHead)
        assert any(isinstance(mod, EvoNormS0) for mod in model.backbone.modules())
        assert any(isinstance(mod, EvoNormS0) for mod in model.roi_heads.box_head.modules())
        assert model.backbone.output_shape().keys() == set(LEVELS)

        optimizer = build_optimizer(cfg, model)
        data = iter(build_detection_train_loader(cfg))
        model.train()
        with EventStorage() as storage:
            for step in range(3):
                storage.iter = step
                losses = model(next(data))
                assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
                assert all(math.isfinite(v.item()) for v in losses.values()), losses
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()

        model.eval()
        # use_fast_impl=False: pycocotools' COCOeval, available on both backends (the
        # detectron2 build used for checking may lack its compiled fast evaluator).
        evaluator = COCOEvaluator(
            names["val"],
            tasks=("bbox",),
            distributed=False,
            output_dir=str(tmp_path / "eval"),
            use_fast_impl=False,
        )
        results = inference_on_dataset(
            model, build_detection_test_loader(cfg, names["val"]), evaluator
        )
        with torch.no_grad():
            image = next(iter(build_detection_test_loader(cfg, names["val"])))
            detections = model(image)[0]["instances"]
    finally:
        torch.set_num_threads(threads)
    assert set(results) == {"bbox"}
    assert {"AP", "AP50", "AP75"} <= set(results["bbox"])
    # Overall metrics are defined (per-class / per-size ones are NaN when the 2 val images
    # lack that class or size).
    assert all(0.0 <= results["bbox"][k] <= 100.0 for k in ("AP", "AP50", "AP75"))
    assert 0 < len(detections) <= 10
    assert (
        detections.has("pred_boxes") and detections.has("scores") and detections.has("pred_classes")
    )
    assert ((detections.pred_classes >= 0) & (detections.pred_classes < 3)).all()
