"""Every config under configs/ merges with sephnet's keys, validates and builds its model.

One config per distinct combination of components (backbone and FPN norm, backbone hooks,
multi-scale pooler, proposal generator and anchor matcher, ROI heads, box head and its norm,
sampler, classifier layer, IoU branch, box loss, mask head) also runs one training step (forward, losses, backward) and
one inference on a 64x64 image on CPU, with the config's own depth and widths (ResNet-50
included) but only 16 proposals and 16 sampled ROIs per image, which keeps the heads cheap.
"""
import glob
import os

import pytest
import torch

import sephnet.layers  # noqa: F401  (registration)
import sephnet.modeling.backbone  # noqa: F401
import sephnet.modeling.proposal_generator  # noqa: F401
import sephnet.modeling.roi_heads  # noqa: F401
from sephnet.backend import (
    BACKEND,
    BitMasks,
    Boxes,
    EventStorage,
    Instances,
    build_model,
    get_cfg,
)
from sephnet.config import add_sephnet_config, validate_sephnet_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/coco/ablations.yaml is the index of the log, not a config.
CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if os.path.basename(p) != "ablations.yaml"
)
SIZE = 64  # divisible by the largest FPN stride (P6: 64)


# CPU-friendly counts for the training/inference step (the heads' cost scales with them).
FEW_ROIS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "16",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
]


def _load(path, opts=("MODEL.DEVICE", "cpu")):
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    validate_sephnet_config(cfg)
    cfg.freeze()
    return cfg


def _components(cfg):
    """The keys that choose which modules are built (not their sizes or loss weights)."""
    m, seph = cfg.MODEL, cfg.MODEL.SEPH
    box_head = seph.BOX_HEAD.NAME if m.ROI_HEADS.NAME.startswith("Seph") else m.ROI_BOX_HEAD.NAME
    hooks = seph.BACKBONE_HOOKS
    return (
        m.META_ARCHITECTURE, m.BACKBONE.NAME, m.RESNETS.DEPTH, m.FPN.NORM, seph.FPN.TOP_BLOCK,
        hooks.BEFORE, hooks.AFTER, hooks.RPN, seph.MULTISCALE_POOLER.ENABLED,
        m.PROPOSAL_GENERATOR.NAME, m.RPN.HEAD_NAME, seph.RPN.MATCHER.NAME,
        m.ROI_HEADS.NAME, box_head, m.ROI_BOX_HEAD.NORM, seph.SAMPLER.NAME,
        seph.PREDICTOR.CLS_LAYER, seph.IOU_BRANCH.ENABLED, m.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE,
        m.MASK_ON, m.MASK_ON and m.ROI_MASK_HEAD.NAME, m.MASK_ON and m.ROI_MASK_HEAD.NORM,
    )


def _representatives():
    """The first config (in path order) of each distinct component combination."""
    seen, chosen = set(), set()
    for path in CONFIGS:
        key = _components(_load(path))
        if key not in seen:
            seen.add(key)
            chosen.add(path)
    return chosen


REPRESENTATIVES = _representatives()


def _image_with_two_objects(num_classes):
    image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)
    boxes = torch.tensor([[4.0, 6.0, 40.0, 30.0], [20.0, 24.0, 60.0, 62.0]])
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = True
    instances = Instances((SIZE, SIZE))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.tensor([0, num_classes - 1])
    instances.gt_masks = BitMasks(masks)
    return {"image": image, "instances": instances, "height": SIZE, "width": SIZE}


def test_configs_are_found_and_representatives_cover_each_combination():
    names = {os.path.relpath(p, REPO) for p in CONFIGS}
    assert "configs/Base-Seph-RCNN-FPN.yaml" in names
    assert "configs/coco/Mask-RCNN-FPN-sephv14.yaml" in names
    assert len({_components(_load(p)) for p in REPRESENTATIVES}) == len(REPRESENTATIVES)
    assert 1 < len(REPRESENTATIVES) < len(CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_merges_validates_and_builds(path):
    representative = path in REPRESENTATIVES
    cfg = _load(path, FEW_ROIS if representative else ("MODEL.DEVICE", "cpu"))
    _skip_unbuildable_on_detectron2(cfg)
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "SephSSD":
        _check_ssd(path, cfg, model, representative)
        return
    if cfg.MODEL.META_ARCHITECTURE == "SephDETR":
        _check_detr(cfg, model, representative)
        return
    if not hasattr(model, "roi_heads"):  # a one-stage (dense) detector
        _check_dense_detector(cfg, model, representative)
        return
    assert model.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert hasattr(model.roi_heads, "mask_head") == cfg.MODEL.MASK_ON
    # the levels the RPN and ROI heads read are ones the backbone produces
    assert set(cfg.MODEL.RPN.IN_FEATURES) | set(cfg.MODEL.ROI_HEADS.IN_FEATURES) <= set(
        model.backbone.output_shape()
    )
    if not representative:
        return

    _skip_training_without_a_deformable_backward(cfg)
    data = _image_with_two_objects(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    model.train()
    with EventStorage(0):
        losses = model([data])
    # Cascade names its losses per stage (detectron2's loss_cls_stage0, ...)
    assert ("loss_cls" in losses or "loss_cls_stage0" in losses) and "loss_rpn_cls" in losses
    assert ("loss_mask" in losses) == cfg.MODEL.MASK_ON
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    for part in (model.backbone, model.proposal_generator, model.roi_heads.box_predictor):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), type(part).__name__

    model.eval()
    with torch.no_grad():
        (result,) = model([{k: data[k] for k in ("image", "height", "width")}])
    instances = result["instances"]
    assert instances.image_size == (SIZE, SIZE)
    assert len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert instances.has("pred_masks") == cfg.MODEL.MASK_ON or len(instances) == 0


def _skip_training_without_a_deformable_backward(cfg):
    """detectron2 v0.6 has CPU forward kernels for deformable convs but no CPU backward."""
    if BACKEND == "detectron2" and any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) and not torch.cuda.is_available():
        pytest.skip("detectron2 v0.6 cannot backpropagate through deformable convs on CPU")


def _skip_unbuildable_on_detectron2(cfg):
    """detectron2 v0.6's RetinaNetHead probes its norm with 1 channel: "GN" fails on current torch."""
    if BACKEND == "detectron2" and cfg.MODEL.META_ARCHITECTURE == "RetinaNet" and cfg.MODEL.RETINANET.NORM == "GN":
        pytest.skip("detectron2 v0.6 RetinaNetHead cannot build GroupNorm(32, 1) on current torch")


# A full VGG16 at 300 px takes seconds per step on one core; the step runs with 8-16 channels.
NARROW_VGG = ["MODEL.SEPH.VGG.WIDTHS", "[8, 8, 16, 16, 16]", "MODEL.SEPH.VGG.FC_WIDTH", "16"]


def _check_ssd(path, cfg, model, representative):
    """SSD: one head level per feature map; one step and one inference (the model warps the
    64 x 64 image to its square input), with a narrow VGG16 where that is the base."""
    assert model.num_classes == cfg.MODEL.SEPH.SSD.NUM_CLASSES
    assert len(model.head.cls_convs) == len(model.backbone.output_shape())
    if not representative:
        return
    if cfg.MODEL.SEPH.SSD.BASE_BACKBONE == "build_seph_vgg16_backbone":
        cfg = _load(path, FEW_ROIS + NARROW_VGG)
        model = build_model(cfg)
    _one_step_and_inference(cfg, model, cfg.MODEL.SEPH.SSD.NUM_CLASSES)


def _check_dense_detector(cfg, model, representative):
    """RetinaNet-style models: head on the configured levels; one step and one inference."""
    assert model.num_classes == cfg.MODEL.RETINANET.NUM_CLASSES
    assert set(cfg.MODEL.RETINANET.IN_FEATURES) <= set(model.backbone.output_shape())
    if not representative:
        return
    _skip_training_without_a_deformable_backward(cfg)
    _one_step_and_inference(cfg, model, cfg.MODEL.RETINANET.NUM_CLASSES)


def _one_step_and_inference(cfg, model, num_classes):
    """A dense detector (``model.head``) trains one step and infers on a 64 x 64 image."""
    data = _image_with_two_objects(num_classes)
    model.train()
    with EventStorage(0):
        losses = model([data])
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0, losses
    total.backward()
    for part in (model.backbone, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    model.eval()
    with torch.no_grad():
        (result,) = model([{k: data[k] for k in ("image", "height", "width")}])
    assert result["instances"].image_size == (SIZE, SIZE)
    assert len(result["instances"]) <= cfg.TEST.DETECTIONS_PER_IMAGE


def _check_detr(cfg, model, representative):
    """DETR: the transformer reads a backbone output; one step (every decoder layer's losses)
    and one inference."""
    detr = cfg.MODEL.SEPH.DETR
    assert model.class_embed.out_features == detr.NUM_CLASSES + 1
    assert detr.IN_FEATURE in model.backbone.output_shape()
    if not representative:
        return
    data = _image_with_two_objects(detr.NUM_CLASSES)
    model.train()
    with EventStorage(0):
        losses = model([data])
    assert len(losses) == 3 * (detr.DEC_LAYERS if detr.DEEP_SUPERVISION else 1), sorted(losses)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0, losses
    total.backward()
    for part in (model.backbone, model.transformer, model.bbox_embed):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    model.eval()
    with torch.no_grad():
        (result,) = model([{k: data[k] for k in ("image", "height", "width")}])
    assert result["instances"].image_size == (SIZE, SIZE)
    assert len(result["instances"]) <= min(cfg.TEST.DETECTIONS_PER_IMAGE, detr.NUM_QUERIES)
