"""Model-level contract: parameter names/shapes equal detectron2 v0.6's, and the full Mask R-CNN
trains and infers on CPU.

The expected state_dict layouts below are written from detectron2 v0.6's module structure
(ResNet stem/stages with FrozenBN-wrapped convs, FPN lateral/output convs, StandardRPNHead,
FastRCNNConvFCHead + FastRCNNOutputLayers, MaskRCNNConvUpsampleHead, Res5ROIHeads, CascadeROIHeads
with per-stage heads) and never from our own model, so a renamed attribute or a wrong shape fails.
"""
from typing import Dict, Iterator, Tuple

import pytest
import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.modeling.meta_arch import build_model
from sephnet.d2.structures import Boxes, Instances, PolygonMasks
from sephnet.d2.utils.events import EventStorage

Shape = Tuple[int, ...]

# (stage name, number of blocks, bottleneck channels, output channels) of ResNet-50.
R50_STAGES = [
    ("res2", 3, 64, 256),
    ("res3", 4, 128, 512),
    ("res4", 6, 256, 1024),
    ("res5", 3, 512, 2048),
]
NUM_CLASSES = 80


# ---------------------------------------------------------------------------------------------
# Expected layouts, spelled out from detectron2's architecture.
# ---------------------------------------------------------------------------------------------
def _frozen_bn(prefix: str, channels: int) -> Iterator[Tuple[str, Shape]]:
    # FrozenBatchNorm2d keeps all four statistics as (persistent) buffers, no num_batches_tracked.
    for name in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}.{name}", (channels,)


def _conv_bn(prefix: str, c_out: int, c_in: int, k: int) -> Iterator[Tuple[str, Shape]]:
    # A detectron2 Conv2d with a norm has no bias; the norm is its child "norm".
    yield f"{prefix}.weight", (c_out, c_in, k, k)
    yield from _frozen_bn(f"{prefix}.norm", c_out)


def _conv(prefix: str, c_out: int, c_in: int, k: int) -> Iterator[Tuple[str, Shape]]:
    yield f"{prefix}.weight", (c_out, c_in, k, k)
    yield f"{prefix}.bias", (c_out,)


def _linear(prefix: str, c_out: int, c_in: int) -> Iterator[Tuple[str, Shape]]:
    yield f"{prefix}.weight", (c_out, c_in)
    yield f"{prefix}.bias", (c_out,)


def _bottleneck_stage(prefix, blocks, c_in, bottleneck, c_out):
    for i in range(blocks):
        block = f"{prefix}.{i}"
        if c_in != c_out:
            yield from _conv_bn(f"{block}.shortcut", c_out, c_in, 1)
        yield from _conv_bn(f"{block}.conv1", bottleneck, c_in, 1)
        yield from _conv_bn(f"{block}.conv2", bottleneck, bottleneck, 3)
        yield from _conv_bn(f"{block}.conv3", c_out, bottleneck, 1)
        c_in = c_out


def _resnet50(prefix: str, stages) -> Iterator[Tuple[str, Shape]]:
    yield from _conv_bn(f"{prefix}stem.conv1", 64, 3, 7)
    c_in = 64
    for name, blocks, bottleneck, c_out in stages:
        yield from _bottleneck_stage(f"{prefix}{name}", blocks, c_in, bottleneck, c_out)
        c_in = c_out


def _fpn_backbone() -> Iterator[Tuple[str, Shape]]:
    for level, (_, _, _, c_in) in zip((2, 3, 4, 5), R50_STAGES):
        yield from _conv(f"backbone.fpn_lateral{level}", 256, c_in, 1)
        yield from _conv(f"backbone.fpn_output{level}", 256, 256, 3)
    yield from _resnet50("backbone.bottom_up.", R50_STAGES)


def _rpn_head(channels: int, anchors: int) -> Iterator[Tuple[str, Shape]]:
    yield from _conv("proposal_generator.rpn_head.conv", channels, channels, 3)
    yield from _conv("proposal_generator.rpn_head.objectness_logits", anchors, channels, 1)
    yield from _conv("proposal_generator.rpn_head.anchor_deltas", 4 * anchors, channels, 1)


def _box_predictor(prefix: str, c_in: int, box_outputs: int) -> Iterator[Tuple[str, Shape]]:
    yield from _linear(f"{prefix}.cls_score", NUM_CLASSES + 1, c_in)
    yield from _linear(f"{prefix}.bbox_pred", box_outputs, c_in)


def _fpn_mask_head() -> Iterator[Tuple[str, Shape]]:
    for i in range(1, 5):
        yield from _conv(f"roi_heads.mask_head.mask_fcn{i}", 256, 256, 3)
    yield "roi_heads.mask_head.deconv.weight", (256, 256, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    yield "roi_heads.mask_head.deconv.bias", (256,)
    yield from _conv("roi_heads.mask_head.predictor", NUM_CLASSES, 256, 1)


def _fc_box_head(prefix: str) -> Iterator[Tuple[str, Shape]]:
    yield from _linear(f"{prefix}.fc1", 1024, 256 * 7 * 7)
    yield from _linear(f"{prefix}.fc2", 1024, 1024)


def expected_mask_rcnn_r50_fpn() -> Dict[str, Shape]:
    def gen():
        yield from _fpn_backbone()
        yield from _rpn_head(256, 3)  # one size x three aspect ratios per level
        yield from _fc_box_head("roi_heads.box_head")
        yield from _box_predictor("roi_heads.box_predictor", 1024, 4 * NUM_CLASSES)
        yield from _fpn_mask_head()

    return dict(gen())


def expected_mask_rcnn_r50_c4() -> Dict[str, Shape]:
    def gen():
        yield from _resnet50("backbone.", R50_STAGES[:3])
        yield from _rpn_head(1024, 15)  # five sizes x three aspect ratios on res4
        _, blocks, bottleneck, c_out = R50_STAGES[3]
        yield from _bottleneck_stage("roi_heads.res5", blocks, 1024, bottleneck, c_out)
        yield from _box_predictor("roi_heads.box_predictor", 2048, 4 * NUM_CLASSES)
        # NUM_CONV = 0: the deconv reads the 2048-channel res5 output directly.
        yield "roi_heads.mask_head.deconv.weight", (2048, 256, 2, 2)
        yield "roi_heads.mask_head.deconv.bias", (256,)
        yield from _conv("roi_heads.mask_head.predictor", NUM_CLASSES, 256, 1)

    return dict(gen())


def expected_cascade_mask_rcnn_r50_fpn() -> Dict[str, Shape]:
    def gen():
        yield from _fpn_backbone()
        yield from _rpn_head(256, 3)
        for stage in range(3):
            yield from _fc_box_head(f"roi_heads.box_head.{stage}")
            yield from _box_predictor(f"roi_heads.box_predictor.{stage}", 1024, 4)  # agnostic
        yield from _fpn_mask_head()

    return dict(gen())


# ---------------------------------------------------------------------------------------------
# Configs: detectron2's YAML values restated (Base-RCNN-FPN / Base-RCNN-C4 + the leaf files).
# ---------------------------------------------------------------------------------------------
def mask_rcnn_fpn_cfg(depth: int = 50):
    """Base-RCNN-FPN.yaml + COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml (model part)."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
            "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]],
            "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000,
            "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 1000,
            "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
            "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC", 2,
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
            "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14,
            "MODEL.MASK_ON", True,
            "MODEL.RESNETS.DEPTH", depth,
            "MODEL.DEVICE", "cpu",
        ]
    )
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


def mask_rcnn_c4_cfg():
    """Base-RCNN-C4.yaml + COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml (model part);
    the backbone, anchors and heads are the v0.6 defaults."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
            "MODEL.RPN.PRE_NMS_TOPK_TEST", 6000,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 1000,
            "MODEL.ROI_HEADS.NAME", "Res5ROIHeads",
            "MODEL.MASK_ON", True,
            "MODEL.RESNETS.DEPTH", 50,
            "MODEL.DEVICE", "cpu",
        ]
    )
    return cfg


def cascade_mask_rcnn_fpn_cfg():
    """Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml on top of Base-RCNN-FPN.yaml."""
    cfg = mask_rcnn_fpn_cfg()
    cfg.merge_from_list(
        [
            "MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
            "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 2000,
        ]
    )
    return cfg


def _state_dict_shapes(model: torch.nn.Module) -> Dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _diff(actual: Dict[str, Shape], expected: Dict[str, Shape]) -> str:
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    wrong = sorted(k for k in set(actual) & set(expected) if actual[k] != expected[k])
    return (
        f"missing={missing[:10]} unexpected={unexpected[:10]} "
        f"wrong shapes={[(k, actual[k], expected[k]) for k in wrong[:10]]}"
    )


@pytest.mark.parametrize(
    "make_cfg, expected",
    [
        (mask_rcnn_fpn_cfg, expected_mask_rcnn_r50_fpn),
        (mask_rcnn_c4_cfg, expected_mask_rcnn_r50_c4),
        (cascade_mask_rcnn_fpn_cfg, expected_cascade_mask_rcnn_r50_fpn),
    ],
    ids=["mask_rcnn_R_50_FPN", "mask_rcnn_R_50_C4", "cascade_mask_rcnn_R_50_FPN"],
)
def test_state_dict_keys_and_shapes_match_detectron2(make_cfg, expected):
    model = build_model(make_cfg())
    actual = _state_dict_shapes(model)
    wanted = expected()
    assert actual == wanted, _diff(actual, wanted)
    # Normalisation constants are non-persistent buffers: present, but not checkpointed.
    assert model.pixel_mean.shape == (3, 1, 1) and "pixel_mean" not in actual


# ---------------------------------------------------------------------------------------------
# Tiny end-to-end training / inference.
# ---------------------------------------------------------------------------------------------
def _gt(height: int, width: int, boxes, classes) -> Instances:
    gt = Instances((height, width))
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    gt.gt_classes = torch.tensor(classes, dtype=torch.int64)
    gt.gt_masks = PolygonMasks(
        [[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in gt.gt_boxes.tensor.tolist()]
    )
    return gt


def _training_batch():
    image_a = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8).float()
    image_b = torch.randint(0, 256, (3, 72, 64), dtype=torch.uint8).float()
    return [
        {"image": image_a, "instances": _gt(64, 80, [[4, 6, 40, 50], [30, 10, 76, 30]], [3, 17])},
        {"image": image_b, "instances": _gt(72, 64, [[10, 12, 60, 70]], [0])},
    ]


EXPECTED_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}


def _training_model(depth: int, min_proposal_size: float = 0.0):
    cfg = mask_rcnn_fpn_cfg(depth)
    # 64 sampled ROIs per image (16 foreground) instead of 512: the mask head's cost scales with
    # the foreground count and dominates a CPU step; the code path is the same.
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = min_proposal_size
    return build_model(cfg).train()


@pytest.mark.parametrize("depth", [50, 18], ids=["R50-FPN", "R18-FPN"])
def test_mask_rcnn_training_step_gives_finite_losses_and_grads_everywhere(depth):
    model = _training_model(depth)
    with EventStorage(0):
        losses = model(_training_batch())
    assert set(losses) == EXPECTED_LOSSES
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), (name, value)
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert no_grad == []
    # FREEZE_AT = 2 freezes the stem and res2: they must not be trainable.
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    frozen_prefixes = ("backbone.bottom_up.stem.", "backbone.bottom_up.res2.")
    assert frozen and all(n.startswith(frozen_prefixes) for n in frozen)


def test_training_with_an_image_without_ground_truth():
    model = _training_model(18)
    batch = _training_batch()
    batch[1]["instances"] = _gt(72, 64, [], [])
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) == EXPECTED_LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_training_when_rpn_proposes_nothing_uses_gt_as_proposals():
    model = _training_model(18, min_proposal_size=1e6)  # every proposal is "too small"
    with EventStorage(0):
        losses = model(_training_batch())
    assert set(losses) == EXPECTED_LOSSES
    assert all(torch.isfinite(v) for v in losses.values())


def _inference_model(min_proposal_size: float = 0.0):
    cfg = mask_rcnn_fpn_cfg(18)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep low-score detections
    cfg.TEST.DETECTIONS_PER_IMAGE = 10  # fewer mask-head ROIs keeps the test fast
    cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = min_proposal_size
    return build_model(cfg).eval()


def test_inference_reports_instances_in_original_image_coordinates():
    model = _inference_model()
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8).float()
    inputs = [{"image": image, "height": 96, "width": 160}]  # original image was 2x / 2.5x larger
    with torch.no_grad():
        (output,) = model(inputs)
        (raw,) = model.inference(inputs, do_postprocess=False)
    instances = output["instances"]
    assert instances.image_size == (96, 160)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(instances.get_fields())
    assert len(instances) > 0
    assert instances.pred_masks.shape == (len(instances), 96, 160)
    assert instances.pred_masks.dtype == torch.bool
    assert raw.image_size == (48, 64)
    # Raw boxes live in the 48 x 64 network input; outputs are those scaled by (2.5, 2).
    keep = raw.pred_boxes.nonempty()
    expected = raw.pred_boxes.tensor[keep] * torch.tensor([2.5, 2.0, 2.5, 2.0])
    assert torch.allclose(instances.pred_boxes.tensor, expected, atol=1e-4)
    assert torch.equal(instances.scores, raw.scores[keep])
    box = instances.pred_boxes.tensor
    assert (box[:, 0] >= 0).all() and (box[:, 2] <= 160).all() and (box[:, 3] <= 96).all()


def test_inference_with_zero_proposals_returns_empty_instances():
    model = _inference_model(min_proposal_size=1e6)  # every proposal is "too small"
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8).float()
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 20, "width": 28}])
    instances = output["instances"]
    assert len(instances) == 0
    assert instances.image_size == (20, 28)
    assert instances.pred_masks.shape == (0, 20, 28)
