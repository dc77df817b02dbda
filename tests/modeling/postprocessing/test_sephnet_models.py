"""TTA and MODEL.SEPH.BOX_NMS on sephnet's models (decoupled head with IoU scoring, Cascade,
SephGeneralizedRCNN with two FPNs): invariants on tiny randomly initialised models."""
import pytest
import torch

from sephnet.backend import GeneralizedRCNNWithTTA, build_model
from sephnet.config import validate_sephnet_config
from sephnet.modeling.postprocessing import DetectionNMS

IMAGE = 64

VARIANTS = {
    # sephv2-style decoupled head (FC classes / conv boxes) with the IoU branch multiplying
    "decoupled_iou": {
        "MODEL.SEPH.BOX_HEAD.NAME": "FCClsConvBoxHead",
        "MODEL.SEPH.IOU_BRANCH.ENABLED": True,
        "MODEL.SEPH.IOU_BRANCH.TEST_SCORE": "multiply",
    },
    "cascade_top1": {
        "MODEL.ROI_HEADS.NAME": "SephCascadeROIHeads",
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
        "MODEL.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST": "top1",
    },
    "two_way_fpn": {
        "MODEL.META_ARCHITECTURE": "SephGeneralizedRCNN",
        "MODEL.BACKBONE.NAME": "build_seph_two_way_fpn_backbone",
        "MODEL.SEPH.NECKS.TF_FPN.NUM_TOP_LEVELS": 0,
        "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
        "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
    },
}


def tiny_cfg(sephnet_cfg, variant):
    """Narrow R-50 FPN Mask R-CNN with sephnet's ROI heads, 64 px inputs, CPU."""
    cfg = sephnet_cfg(narrow_r50=4)  # res5: 128 channels, 16 FPN channels
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.BACKBONE.NAME = "build_seph_tf_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128]]
    cfg.MODEL.RPN.IN_FEATURES = ["p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 30
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.3
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # untrained: keep every candidate
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    head = cfg.MODEL.SEPH.BOX_HEAD
    head.NUM_CONV, head.CONV_DIM, head.NUM_FC, head.FC_DIM, head.BRANCH_CONV_DIM = 1, 16, 1, 16, 16
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 4
    cfg.TEST.AUG.MIN_SIZES = (IMAGE,)
    cfg.TEST.AUG.MAX_SIZE = 1000
    cfg.TEST.AUG.FLIP = False
    for key, value in VARIANTS[variant].items():
        cfg.merge_from_list([key, value])
    validate_sephnet_config(cfg)
    return cfg


def image():
    g = torch.Generator().manual_seed(1)
    return {"image": (torch.rand(3, IMAGE, IMAGE, generator=g) * 255).to(torch.uint8),
            "height": IMAGE, "width": IMAGE}


def canonical(instances):
    """Detections sorted by (score, boxes) so that equal sets compare equal."""
    keys = torch.cat([instances.scores[:, None], instances.pred_boxes.tensor], dim=1)
    order = sorted(range(len(keys)), key=lambda i: tuple(keys[i].tolist()), reverse=True)
    return instances[torch.tensor(order, dtype=torch.long)]


def calm_score_layers(model):
    """Rescale the random class (and IoU) layers so that their outputs have unit scale:
    untrained features are large, which saturates the scores to 0 or 1."""
    layers = {n: m for n, m in model.named_modules() if n.endswith(("cls_score", "iou_pred"))}
    norms = {}

    def record(name):
        def hook(module, args):
            norms.setdefault(name, args[0].flatten(1).norm(dim=1).mean())
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in layers.items()]
    model([image()])
    for h in hooks:
        h.remove()
    for name, layer in layers.items():
        layer.weight.copy_(torch.randn_like(layer.weight) / norms[name])
        layer.bias.zero_()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant_model(request, sephnet_cfg):
    torch.manual_seed(0)
    cfg = tiny_cfg(sephnet_cfg, request.param)
    model = build_model(cfg).eval()
    with torch.no_grad():
        # zero box deltas: proposals are the anchors and detections the proposals, so the
        # random model gives many well-formed, overlapping boxes with random class scores
        for name, module in model.named_modules():
            if name.endswith(("anchor_deltas", "bbox_pred")):
                module.weight.zero_()
                module.bias.zero_()
        calm_score_layers(model)
        (plain,) = model([image()])
    assert len(plain["instances"]) > 3  # random heads: many overlapping detections
    return cfg, model, plain["instances"]


def test_tta_with_the_identity_view_is_the_plain_model(variant_model):
    cfg, model, plain = variant_model
    with torch.no_grad():
        (tta,) = GeneralizedRCNNWithTTA(cfg, model)([image()])
    a, b = canonical(plain), canonical(tta["instances"])
    assert len(a) == len(b)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-4)
    assert torch.allclose(a.scores, b.scores)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert torch.equal(a.pred_masks, b.pred_masks)


def predictors(model):
    p = model.roi_heads.box_predictor
    return list(p) if isinstance(p, torch.nn.ModuleList) else [p]


def detect_with(model, detection_nms):
    saved = [p.test_nms for p in predictors(model)]
    for p in predictors(model):
        p.test_nms = detection_nms
    try:
        with torch.no_grad():
            return model([image()])[0]["instances"]
    finally:
        for p, s in zip(predictors(model), saved):
            p.test_nms = s


def test_soft_nms_keeps_the_best_detection_and_adds_decayed_ones(variant_model):
    _, model, plain = variant_model
    soft = detect_with(model, DetectionNMS(method="soft_gaussian", soft_score_thresh=0.01))
    assert len(soft) >= len(plain)
    assert soft.scores[0] == pytest.approx(float(plain.scores[0]))
    assert torch.equal(soft.pred_boxes.tensor[0], plain.pred_boxes.tensor[0])


def test_box_voting_moves_boxes_but_keeps_nms_detections_and_scores(variant_model):
    _, model, plain = variant_model
    voted = detect_with(model, DetectionNMS(fusion="voting", fusion_iou_thresh=0.3))
    assert torch.equal(voted.scores, plain.scores)
    assert torch.equal(voted.pred_classes, plain.pred_classes)
    assert not torch.equal(voted.pred_boxes.tensor, plain.pred_boxes.tensor)


def test_box_nms_keys_reach_every_predictor(sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, "cascade_top1")
    cfg.MODEL.SEPH.BOX_NMS.METHOD = "soft_linear"
    cfg.MODEL.SEPH.BOX_NMS.FUSION = "voting"
    model = build_model(cfg)
    assert {p.test_nms for p in predictors(model)} == {
        DetectionNMS(method="soft_linear", fusion="voting")
    }
