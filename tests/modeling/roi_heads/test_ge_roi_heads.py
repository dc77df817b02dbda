"""SephGEROIHeads (gev1): PointPool samples the proposal centre on its level, square
re-anchoring, box loss relative to the squares, one training step and inference."""
import copy
import math

import pytest
import torch

import sephnet.modeling.roi_heads  # noqa: F401  (registers the ROI heads)
from sephnet.backend import (
    Boxes,
    EventStorage,
    ImageList,
    Instances,
    ShapeSpec,
    build_roi_heads,
)
from sephnet.config import validate_sephnet_config
from sephnet.modeling.roi_heads.ge_roi_heads import GETowers, SephGEROIHeads, point_pooler

K = 3
LEVELS = {"p3": 8, "p4": 16, "p5": 32, "p6": 64}
IMAGE = 256
SHAPES = {k: ShapeSpec(channels=8, stride=s) for k, s in LEVELS.items()}
SIDES = [64.0, 128.0, 256.0, 512.0]


TINY_KEYS = {
    "MODEL.ROI_HEADS.NAME": "SephGEROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": list(LEVELS),
    "MODEL.ROI_HEADS.NUM_CLASSES": K,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[s] for s in SIDES],
    "MODEL.ROI_BOX_HEAD.NORM": "EvoNormS0",
    # not built by SephGEROIHeads; a seph head name keeps the box-head checks of an
    # EvoNorm NORM satisfied (the log's gev1 config also named an unused SepV2 head)
    "MODEL.SEPH.BOX_HEAD.NAME": "TwinTowerConvFCHead",
    "MODEL.SEPH.EVONORM.GROUPS": 4,
    "MODEL.SEPH.GE_ROI_HEADS.NUM_CONVS": 1,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
    "TEST.DETECTIONS_PER_IMAGE": 30,
}


def _cfg(sephnet_cfg, **overrides):
    """The shared config with this file's keys, then ``overrides`` (dotted keys)."""
    return sephnet_cfg({**TINY_KEYS, **overrides})


def _level_by_hand(box):
    side = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    return min(3, max(0, math.floor(math.log2(side / 64))))


def test_point_pool_reads_the_bilinear_feature_at_the_centre_of_the_right_level():
    # channel 0 of level l is the plane 1000 l + 2 x + 3 y (x, y map coordinates), which
    # bilinear interpolation reproduces exactly inside the map
    maps = []
    for level, stride in enumerate(LEVELS.values()):
        n = IMAGE // stride
        y, x = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
        maps.append((1000 * level + 2 * x + 3 * y)[None, None])
    boxes = [[40, 50, 80, 90], [10, 20, 150, 170], [0, 0, 260, 256], [20, 30, 70, 60]]
    pooler = point_pooler(list(LEVELS.values()), 64, 0)
    out = pooler(maps, [Boxes(torch.tensor(boxes, dtype=torch.float32))])
    assert out.shape == (4, 1, 1, 1)
    for value, box in zip(out.flatten().tolist(), boxes):
        level = _level_by_hand(box)
        stride = 8 * 2**level
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        expected = 1000 * level + 2 * (cx / stride - 0.5) + 3 * (cy / stride - 0.5)
        assert value == pytest.approx(expected, abs=1e-3)
    assert [_level_by_hand(b) for b in boxes] == [0, 1, 2, 0]  # the case covers 3 levels


def test_proposals_become_level_sized_squares_at_their_centres(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg), SHAPES)
    p = Instances((IMAGE, IMAGE))
    boxes = [[10, 10, 50, 30], [0, 0, 200, 200], [0, 0, 256, 256], [100, 100, 101, 140]]
    p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    p.objectness_logits = torch.arange(4.0)
    (sq,) = heads.square_proposals([p])
    expected = []
    for b in boxes:
        half = SIDES[_level_by_hand(b)] / 2
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        expected.append([cx - half, cy - half, cx + half, cy + half])
    # e.g. [10, 10, 50, 30] (side 28 -> P3) -> 64 px square at (30, 20)
    assert expected[0] == [-2, -12, 62, 52] and expected[1] == [36, 36, 164, 164]
    assert torch.allclose(sq.proposal_boxes.tensor, torch.tensor(expected))
    assert torch.equal(sq.objectness_logits, p.objectness_logits)
    assert torch.equal(p.proposal_boxes.tensor, torch.tensor(boxes, dtype=torch.float32))


def _features(n=2, requires_grad=False):
    g = torch.Generator().manual_seed(3)
    return {
        k: torch.randn(n, 8, IMAGE // s, IMAGE // s, generator=g).requires_grad_(requires_grad)
        for k, s in LEVELS.items()
    }


GT = [([[20, 20, 100, 90], [120, 100, 250, 240]], [0, 2]), ([[30, 40, 90, 200]], [1])]


def _batch():
    g = torch.Generator().manual_seed(4)
    targets, proposals = [], []
    for boxes, classes in GT:
        t = Instances((IMAGE, IMAGE))
        t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        t.gt_classes = torch.tensor(classes)
        targets.append(t)
        gt = t.gt_boxes.tensor
        xy = torch.rand(30, 2, generator=g) * 180
        rand = torch.cat([xy, xy + 8 + torch.rand(30, 2, generator=g) * 120], dim=1)
        jitter = torch.cat([gt + torch.randn(gt.shape, generator=g) * 4 for _ in range(4)])
        p = Instances((IMAGE, IMAGE))
        p.proposal_boxes = Boxes(torch.cat([rand, jitter]).clamp(0, IMAGE))
        p.objectness_logits = torch.randn(len(p.proposal_boxes), generator=g)
        proposals.append(p)
    return proposals, targets


def _images(n=2):
    return ImageList(torch.zeros(n, 3, IMAGE, IMAGE), [(IMAGE, IMAGE)] * n)


def test_builds_towers_point_pool_and_a_vector_predictor(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg), SHAPES)
    assert isinstance(heads, SephGEROIHeads) and isinstance(heads.box_head, GETowers)
    assert heads.box_predictor.cls_score.in_features == 8
    assert heads.box_predictor.bbox_pred.in_features == 8
    tower = heads.box_head.cls_tower
    assert len(tower.convs) == 1 and len(tower.norms[0]) == 4 and tower.activation is None
    assert heads.square_sides.tolist() == SIDES


def test_trains_one_step_with_box_loss_relative_to_the_squares(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg), SHAPES).train()
    torch.nn.init.zeros_(heads.box_predictor.bbox_pred.weight)  # deltas 0: decoded = squares
    torch.nn.init.zeros_(heads.box_predictor.bbox_pred.bias)
    proposals, targets = _batch()
    features = _features(requires_grad=True)
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.1)
    with EventStorage():
        sampled, losses = heads(_images(), features, copy.deepcopy(proposals), targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"}

    # smooth L1 with beta 0 = L1 of detectron2's (10, 10, 5, 5) deltas of the gt w.r.t. the
    # square of each foreground ROI, summed and divided by all ROIs
    total, rois = 0.0, 0
    for s in sampled:
        rois += len(s)
        for box, gt, fg in zip(
            s.proposal_boxes.tensor.tolist(), s.gt_boxes.tensor.tolist(), s.gt_is_matched.tolist()
        ):
            if not fg:
                continue
            side = SIDES[_level_by_hand(box)]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            gw, gh = gt[2] - gt[0], gt[3] - gt[1]
            total += abs(10 * ((gt[0] + gt[2]) / 2 - cx) / side)
            total += abs(10 * ((gt[1] + gt[3]) / 2 - cy) / side)
            total += abs(5 * math.log(gw / side)) + abs(5 * math.log(gh / side))
    assert sum(int(s.gt_is_matched.sum()) for s in sampled) > 0
    assert losses["loss_box_reg"].item() == pytest.approx(total / rois, rel=1e-4)

    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert heads.box_head.cls_tower.convs[0].weight.grad.abs().sum() > 0
    assert heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    assert features["p3"].grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    with EventStorage():
        _, after = heads(_images(), features, copy.deepcopy(proposals), targets)
    assert all(torch.isfinite(v) for v in after.values())
    sum(after.values()).backward()  # bbox_pred is no longer zero: the box tower learns too
    assert heads.box_head.box_tower.convs[0].weight.grad.abs().sum() > 0


def test_inference_decodes_relative_to_the_squares(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg), SHAPES).eval()
    torch.nn.init.zeros_(heads.box_predictor.bbox_pred.weight)
    torch.nn.init.zeros_(heads.box_predictor.bbox_pred.bias)
    proposals, _ = _batch()
    with torch.no_grad():
        results, _ = heads(_images(), _features(), copy.deepcopy(proposals))
    assert len(results) == 2
    for r, p in zip(results, proposals):
        assert 0 < len(r) <= 30
        assert set(r.get_fields()) >= {"pred_boxes", "scores", "pred_classes"}
        squares = []
        for b in p.proposal_boxes.tensor.tolist():
            half = SIDES[_level_by_hand(b)] / 2
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            squares.append([cx - half, cy - half, cx + half, cy + half])
        squares = torch.tensor(squares).clamp(0, IMAGE)
        # with zero deltas each detection is the (clipped) square of one proposal
        dist = (r.pred_boxes.tensor[:, None, :] - squares[None]).abs().amax(dim=2)
        assert (dist.min(dim=1).values < 1e-3).all()


def test_config_errors_name_the_keys(sephnet_cfg):
    validate_sephnet_config(_cfg(sephnet_cfg))
    with pytest.raises(ValueError, match="CANONICAL_LEVEL=4"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.SEPH.GE_ROI_HEADS.CANONICAL_LEVEL": 4}))
    with pytest.raises(ValueError, match="NUM_CONVS=-1"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.SEPH.GE_ROI_HEADS.NUM_CONVS": -1}))
    with pytest.raises(ValueError, match="CANONICAL_BOX_SIZE=0"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.SEPH.GE_ROI_HEADS.CANONICAL_BOX_SIZE": 0}))
    with pytest.raises(ValueError, match="ANCHOR_GENERATOR.SIZES"):
        validate_sephnet_config(_cfg(sephnet_cfg, **{"MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64]]}))
    with pytest.raises(ValueError, match="ANCHOR_GENERATOR.SIZES"):
        build_roi_heads(_cfg(sephnet_cfg, **{"MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64]]}), SHAPES)
