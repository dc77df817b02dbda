"""SephRetinaNetPG: losses on a hand-built case, proposal counts and order (train and test),
the per-level norm head, building from a config, config errors."""
import math

import pytest
import torch
from torch import nn

import sephnet.modeling.proposal_generator  # noqa: F401  (registers SephRetinaNetPG)
from sephnet.backend import (
    Box2BoxTransform,
    Boxes,
    DefaultAnchorGenerator,
    EventStorage,
    ImageList,
    Instances,
    Matcher,
    ShapeSpec,
    build_proposal_generator,
)
from sephnet.config import validate_sephnet_config
from sephnet.modeling.proposal_generator.retinanet_pg import SephRetinaNetPG
from sephnet.modeling.proposal_generator.retinanet_pg_head import RetinaNetPGHead

LEVELS = {"p3": 8, "p4": 16}
IMAGE = 64


class _FixedHead(nn.Module):
    """Returns given per-level outputs, whatever the features."""

    def __init__(self, logits, deltas):
        super().__init__()
        self.logits, self.deltas = logits, deltas

    def forward(self, features):
        return self.logits, self.deltas


def _images(n, size):
    return ImageList(torch.zeros(n, 3, size, size), [(size, size)] * n)


def _gt(boxes, size):
    t = Instances((size, size))
    t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    t.gt_classes = torch.zeros(len(t.gt_boxes), dtype=torch.int64)
    return t


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _giou(a, b):
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union - (hull - union) / hull


def _labels_reference(anchors, gts, lo=0.4, hi=0.5):
    """RetinaNet labels by loops: 1 / -1 / 0 by max IoU, plus every gt's best anchors."""
    labels, matched = [], []
    for a in anchors:
        ious = [_iou(a, g) for g in gts]
        best = max(ious) if ious else 0.0
        labels.append(1 if best >= hi else (-1 if best >= lo else 0))
        matched.append(gts[ious.index(best)] if ious else None)
    for g in gts:
        ious = [_iou(a, g) for a in anchors]
        for i, v in enumerate(ious):
            if v == max(ious) and v > 0:
                labels[i], matched[i] = 1, g
    return labels, matched


@pytest.mark.parametrize("loss_type", ["giou", "smooth_l1"])
def test_losses_on_a_hand_built_case(loss_type):
    # one 2x2 level of stride 16, anchors of side 16 and 24 centred in each cell: 8 anchors
    gen = DefaultAnchorGenerator(sizes=[[16, 24]], aspect_ratios=[[1.0]], strides=[16], offset=0.5)
    anchors = gen([torch.zeros(1, 1, 2, 2)])[0].tensor.tolist()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 2, 2, generator=g, requires_grad=True)  # [N, A, H, W]
    deltas = torch.zeros(2, 8, 2, 2, requires_grad=True)  # decoded boxes = anchors
    pg = SephRetinaNetPG(
        in_features=["p4"],
        head=_FixedHead([logits], [deltas]),
        anchor_generator=gen,
        anchor_matcher=Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        pre_nms_topk=(100, 100),
        post_nms_topk=(100, 100),
        box_reg_loss_type=loss_type,
        loss_weight={"loss_rpn_loc": 2.0},
    ).train()
    gts = [[[0, 0, 16, 16], [14, 14, 32, 32]], []]
    targets = [_gt(b, 32) for b in gts]
    with EventStorage():
        _, losses = pg(_images(2, 32), {"p4": torch.zeros(2, 1, 2, 2)}, targets)

    # anchor order: position major (row, col), anchor size minor
    flat_logits = logits.detach().permute(0, 2, 3, 1).reshape(2, -1)
    focal, box, num_pos, seen = 0.0, 0.0, 0, set()
    for img in range(2):
        labels, matched = _labels_reference(anchors, gts[img])
        seen.update(labels)
        for r, (label, a) in enumerate(zip(labels, anchors)):
            if label < 0:
                continue
            p = torch.sigmoid(flat_logits[img, r]).item()
            if label == 1:
                num_pos += 1
                focal += -0.25 * (1 - p) ** 2 * math.log(p)
                gt = matched[r]
                if loss_type == "giou":
                    box += 1 - _giou(a, gt)
                else:  # L1 on the (1, 1, 1, 1) deltas of the gt w.r.t. the anchor
                    aw, ah = a[2] - a[0], a[3] - a[1]
                    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
                    box += abs((gt[0] + gw / 2 - a[0] - aw / 2) / aw)
                    box += abs((gt[1] + gh / 2 - a[1] - ah / 2) / ah)
                    box += abs(math.log(gw / aw)) + abs(math.log(gh / ah))
            else:
                focal += -0.75 * p**2 * math.log(1 - p)
    assert seen == {-1, 0, 1}  # the case exercises ignored anchors too
    # [0,0,16,16]: its side-16 anchor (IoU 1; the side-24 one, 0.44, is ignored);
    # [14,14,32,32]: both anchors of cell (1, 1) (IoU 0.79 and 0.56)
    assert num_pos == 3
    assert torch.allclose(losses["loss_rpn_cls"], torch.tensor(focal / num_pos), rtol=1e-5)
    assert torch.allclose(losses["loss_rpn_loc"], torch.tensor(2.0 * box / num_pos), rtol=1e-5)
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and deltas.grad.abs().sum() > 0


def _cfg(sephnet_cfg, **overrides):
    cfg = sephnet_cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "SephRetinaNetPG"
    cfg.MODEL.RPN.IN_FEATURES = list(LEVELS)
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "giou"
    cfg.MODEL.SEPH.RETINANET_PG.NORM = "EvoNormS0"
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


def _features(n=2, requires_grad=False):
    g = torch.Generator().manual_seed(2)
    return {
        k: torch.randn(n, 8, IMAGE // s, IMAGE // s, generator=g).requires_grad_(requires_grad)
        for k, s in LEVELS.items()
    }


SHAPES = {k: ShapeSpec(channels=8, stride=s) for k, s in LEVELS.items()}
TARGETS = [[[4, 4, 30, 28], [34, 30, 60, 62]], [[10, 8, 50, 40]]]


def _head_logits(pg, features):
    """Per-image logits of every anchor, level by level, from the module's own head."""
    logits, _ = pg.head([features[f] for f in pg.in_features])
    return [x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) for x in logits]


def test_training_proposals_are_the_top_candidates_sorted_with_exact_counts(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        **{
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 20,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN": 30,
            "MODEL.RPN.NMS_THRESH": 1.0,  # no suppression: counts are exact
        }
    )
    pg = build_proposal_generator(cfg, SHAPES).train()
    features = _features()
    with EventStorage():
        proposals, losses = pg(_images(2, IMAGE), features, [_gt(b, IMAGE) for b in TARGETS])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    levels = _head_logits(pg, features)
    for i, p in enumerate(proposals):
        # 8x8x3 and 4x4x3 anchors: 20 per level survive the pre-NMS top-k, 30 of the 40 stay
        assert len(p) == 30 and p.proposal_boxes.tensor.shape == (30, 4)
        candidates = torch.cat([x[i].detach().topk(20).values for x in levels])
        expected = candidates.sort(descending=True).values[:30]
        assert torch.allclose(p.objectness_logits, expected)
        assert (p.objectness_logits[:-1] >= p.objectness_logits[1:]).all()
        assert not p.objectness_logits.requires_grad
        box = p.proposal_boxes.tensor
        assert (box[:, 0] >= 0).all() and (box[:, 2] <= IMAGE).all()


@pytest.mark.parametrize("detections, expected", [(8, 8), (100, 10)])
def test_test_proposals_top_k_per_level_then_at_most_detections_per_image(detections, expected, sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        **{
            "MODEL.RETINANET.SCORE_THRESH_TEST": 0.0,
            "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 5,
            "MODEL.RETINANET.NMS_THRESH_TEST": 1.0,
            "TEST.DETECTIONS_PER_IMAGE": detections,
        }
    )
    pg = build_proposal_generator(cfg, SHAPES).eval()
    features = _features()
    with torch.no_grad():
        proposals, losses = pg(_images(2, IMAGE), features)
        levels = _head_logits(pg, features)
    assert losses == {}
    for i, p in enumerate(proposals):
        assert len(p) == expected
        candidates = torch.cat([x[i].topk(5).values for x in levels])
        want = candidates.sort(descending=True).values[:expected]
        assert torch.allclose(p.objectness_logits, want)


def test_test_score_threshold_and_nms_reduce_the_proposals(sephnet_cfg):
    pg = build_proposal_generator(_cfg(sephnet_cfg, **{"MODEL.RETINANET.SCORE_THRESH_TEST": 0.5}), SHAPES)
    with torch.no_grad():
        proposals, _ = pg.eval()(_images(2, IMAGE), _features())
    # the prior (0.01) puts every score near 0.01, below 0.5: no proposals, valid Instances
    assert [len(p) for p in proposals] == [0, 0]
    assert proposals[0].proposal_boxes.tensor.shape == (0, 4)

    pg = build_proposal_generator(_cfg(sephnet_cfg, **{"MODEL.RETINANET.SCORE_THRESH_TEST": 0.0}), SHAPES)
    with torch.no_grad():
        proposals, _ = pg.eval()(_images(1, IMAGE), _features(1))
    boxes = proposals[0].proposal_boxes
    from sephnet.backend import pairwise_iou

    iou = pairwise_iou(boxes, boxes)
    iou.fill_diagonal_(0)
    assert len(boxes) > 0 and iou.max() <= 0.5 + 1e-6  # NMS_THRESH_TEST default 0.5


def test_head_has_per_level_norms_and_no_relu_after_evonorm():
    head = RetinaNetPGHead(
        in_channels=8, num_anchors=3, num_levels=2, num_convs=2, norm="EvoNormS0", norm_groups=4
    )
    assert head.cls_tower.activation is None and head.box_tower.activation is None
    assert len(head.cls_tower.norms) == 2 and len(head.cls_tower.norms[0]) == 2
    assert head.cls_tower.norms[0][0] is not head.cls_tower.norms[0][1]
    assert all(c.bias is None for c in head.cls_tower.convs)
    assert torch.allclose(head.cls_score.bias, torch.full((3,), -math.log(99)))
    plain = RetinaNetPGHead(in_channels=8, num_anchors=3, num_levels=2, num_convs=1)
    assert isinstance(plain.cls_tower.activation, nn.ReLU) and plain.cls_tower.norms is None
    # per-level norms: the same input gives different outputs on the two levels once the
    # levels' affine parameters differ
    with torch.no_grad():
        head.cls_tower.norms[0][1].weight.mul_(3.0)
    x = torch.randn(1, 8, 4, 4)
    logits, deltas = head([x, x])
    assert logits[0].shape == (1, 3, 4, 4) and deltas[1].shape == (1, 12, 4, 4)
    assert not torch.allclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="built for 2 levels"):
        head([x])


@pytest.mark.parametrize("name", ["SephRetinaNetPG"])
def test_registered_generator_builds_and_runs_forward_backward(name, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{"MODEL.PROPOSAL_GENERATOR.NAME": name})
    validate_sephnet_config(cfg)
    pg = build_proposal_generator(cfg, SHAPES).train()
    features = _features(requires_grad=True)
    targets = [_gt(TARGETS[0], IMAGE), _gt([], IMAGE)]  # one image without gt
    with EventStorage():
        proposals, losses = pg(_images(2, IMAGE), features, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features.values())
    assert all(p.grad is not None for p in pg.parameters())
    assert [len(p) for p in proposals] == [len(p.objectness_logits) for p in proposals]


def test_config_errors_name_the_keys(sephnet_cfg):
    with pytest.raises(ValueError, match="RETINANET_PG.NORM='Bogus'"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.SEPH.RETINANET_PG.NORM": "Bogus"}))
    with pytest.raises(ValueError, match="RETINANET_PG.NORM='EvoNormS0'.*'RPN'"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.PROPOSAL_GENERATOR.NAME": "RPN"}))
    with pytest.raises(ValueError, match="BBOX_REG_LOSS_TYPE='iou'"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "iou"}))
    with pytest.raises(ValueError, match="IOU_THRESHOLDS"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.RETINANET.IOU_LABELS": [0, 1]}))
    with pytest.raises(ValueError, match="ANCHOR_GENERATOR.SIZES"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.ANCHOR_GENERATOR.SIZES": [[16], [32], [64]]}))
    with pytest.raises(ValueError, match="NUM_CONVS=-1"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.RETINANET.NUM_CONVS": -1}))


def _model_cfg(sephnet_cfg, roi_heads):
    """A narrow R-18 FPN detector with SephRetinaNetPG and the given sephnet ROI heads."""
    cfg = sephnet_cfg()
    m = cfg.MODEL
    m.DEVICE = "cpu"
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.BACKBONE.FREEZE_AT = 0
    m.RESNETS.DEPTH = 18
    m.RESNETS.RES2_OUT_CHANNELS = 64
    m.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    m.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    m.FPN.OUT_CHANNELS = 16
    levels = ["p3", "p4", "p5", "p6"]
    m.PROPOSAL_GENERATOR.NAME = "SephRetinaNetPG"
    m.RPN.IN_FEATURES = levels
    m.RPN.POST_NMS_TOPK_TRAIN = 100
    m.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128]]
    m.RETINANET.NUM_CONVS = 1
    m.RETINANET.BBOX_REG_LOSS_TYPE = "giou"
    m.SEPH.RETINANET_PG.NORM = "EvoNormS0"
    m.SEPH.EVONORM.GROUPS = 4
    m.ROI_HEADS.NAME = roi_heads
    m.ROI_HEADS.IN_FEATURES = levels
    m.ROI_HEADS.NUM_CLASSES = 3
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    m.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    m.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = roi_heads == "SephCascadeROIHeads"
    m.SEPH.BOX_HEAD.NAME = "TwinTowerConvFCHead"
    m.SEPH.BOX_HEAD.NUM_CONV = 1
    m.SEPH.BOX_HEAD.CONV_DIM = 16
    m.SEPH.BOX_HEAD.NUM_FC = 1
    m.SEPH.BOX_HEAD.FC_DIM = 16
    m.SEPH.GE_ROI_HEADS.NUM_CONVS = 1
    m.SEPH.GE_ROI_HEADS.CANONICAL_BOX_SIZE = 16
    m.ROI_BOX_HEAD.NORM = "EvoNormS0"
    m.RETINANET.TOPK_CANDIDATES_TEST = 50
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize(
    "roi_heads", ["SephStandardROIHeads", "SephCascadeROIHeads", "SephGEROIHeads"]
)
def test_in_a_full_model_with_each_sephnet_roi_head(roi_heads, sephnet_cfg):
    from sephnet.backend import build_model

    cfg = _model_cfg(sephnet_cfg, roi_heads)
    validate_sephnet_config(cfg)
    model = build_model(cfg).train()
    assert isinstance(model.proposal_generator, SephRetinaNetPG)
    image = torch.randint(0, 256, (3, IMAGE, IMAGE), dtype=torch.uint8)
    data = {"image": image, "instances": _gt([[4, 6, 40, 30], [20, 24, 60, 62]], IMAGE)}
    data["instances"].gt_classes = torch.tensor([0, 2])
    with EventStorage():
        losses = model([data])
    assert {"loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert model.proposal_generator.head.cls_score.weight.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": image, "height": IMAGE, "width": IMAGE}])
    assert len(result["instances"]) <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert result["instances"].has("pred_boxes")
