"""SephStandardROIHeads: upstream equivalence, labelling fields, sampling, train and eval."""
import copy

import pytest
import torch

import sephnet.modeling.roi_heads  # noqa: F401  (registers heads, predictor, mask head)
from sephnet.backend import (
    Boxes,
    EventStorage,
    ImageList,
    Instances,
    ShapeSpec,
    StandardROIHeads,
    build_roi_heads,
    pairwise_iou,
)
from sephnet.modeling.roi_heads.roi_heads import SephStandardROIHeads
from sephnet.modeling.samplers import BalancedROISampler, RandomROISampler

K = 3  # foreground classes
LEVELS = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
IMAGE = 64
SHAPES = {name: ShapeSpec(channels=8, stride=s) for name, s in LEVELS.items()}


# 8 channels, 7x7 pooling, FC 16, 3 classes, 32 ROIs / 20 detections per image
TINY_KEYS = {
    "MODEL.ROI_HEADS.NAME": "SephStandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": list(LEVELS),
    "MODEL.ROI_HEADS.NUM_CLASSES": K,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 16,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 8,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 2,
    "TEST.DETECTIONS_PER_IMAGE": 20,  # fewer masks to pool and paste in eval
}


def _cfg(sephnet_cfg, **overrides):
    """The shared config with this file's tiny keys, then ``overrides`` (dotted keys)."""
    return sephnet_cfg({**TINY_KEYS, **overrides})


def _features(num_images=2):
    g = torch.Generator().manual_seed(1)
    return {
        name: torch.randn(num_images, 8, IMAGE // s, IMAGE // s, generator=g)
        for name, s in LEVELS.items()
    }


def _square_mask_polygons(boxes):
    from sephnet.backend import PolygonMasks

    return PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes.tolist()])


def _targets(boxes, classes):
    t = Instances((IMAGE, IMAGE))
    t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    t.gt_classes = torch.tensor(classes, dtype=torch.int64)
    t.gt_masks = _square_mask_polygons(t.gt_boxes.tensor)
    return t


def _proposals(gt_boxes, num_random=40, seed=0):
    """Random boxes plus jittered copies of the gt boxes (so some proposals are foreground)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_random, 2, generator=g) * 48
    wh = torch.rand(num_random, 2, generator=g) * 24 + 4
    boxes = [torch.cat([xy, xy + wh], dim=1)]
    gt = torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    for _ in range(4):
        boxes.append(gt + torch.randn(gt.shape, generator=g) * 2)
    boxes = torch.cat(boxes).clamp(0, IMAGE)
    p = Instances((IMAGE, IMAGE))
    p.proposal_boxes = Boxes(boxes)
    p.objectness_logits = torch.randn(len(boxes), generator=g)
    return p


GT = [([[4, 4, 30, 28], [34, 30, 60, 62]], [0, 2]), ([[10, 8, 50, 40]], [1])]


def _batch():
    targets = [_targets(b, c) for b, c in GT]
    proposals = [_proposals(b, seed=i) for i, (b, _) in enumerate(GT)]
    return proposals, targets


def _images(n=2):
    return ImageList(torch.zeros(n, 3, IMAGE, IMAGE), [(IMAGE, IMAGE)] * n)


def _train(heads, proposals, targets, seed=0):
    heads.train()
    torch.manual_seed(seed)
    with EventStorage():
        sampled, losses = heads(
            _images(len(targets)), _features(len(targets)), copy.deepcopy(proposals), targets
        )
    return sampled, losses


class RecordingSampler(RandomROISampler):
    """Uniform sampler that remembers what it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, labels, **kwargs):
        self.calls.append(dict(labels=labels.clone(), **kwargs))
        return super().__call__(labels, **kwargs)


@pytest.mark.parametrize("mask_on", [False, True])
def test_default_keys_reproduce_detectron2_standard_roi_heads(mask_on, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **{"MODEL.MASK_ON": mask_on})
    torch.manual_seed(0)
    ours = build_roi_heads(cfg, SHAPES)
    upstream_cfg = cfg.clone()
    upstream_cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    upstream = build_roi_heads(upstream_cfg, SHAPES)
    assert type(upstream) is StandardROIHeads and type(ours) is SephStandardROIHeads
    assert isinstance(ours.roi_sampler, RandomROISampler)

    # The only state_dict difference is the adapter's extra "head." level.
    state = {
        k.replace("box_head.", "box_head.head.", 1): v for k, v in upstream.state_dict().items()
    }
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)

    proposals, targets = _batch()
    sampled_ours, losses_ours = _train(ours, proposals, targets, seed=3)
    sampled_up, losses_up = _train(upstream, proposals, targets, seed=3)
    expected_keys = {"loss_cls", "loss_box_reg"} | ({"loss_mask"} if mask_on else set())
    assert set(losses_ours) == set(losses_up) == expected_keys
    for key in expected_keys:
        _assert_close(losses_ours[key], losses_up[key], rtol=1e-6, atol=1e-7)
    for a, b in zip(sampled_ours, sampled_up):
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.gt_classes, b.gt_classes)
        assert torch.equal(a.gt_boxes.tensor, b.gt_boxes.tensor)

    ours.eval()
    upstream.eval()
    with torch.no_grad():
        det_ours, _ = ours(_images(), _features(), copy.deepcopy(proposals))
        det_up, _ = upstream(_images(), _features(), copy.deepcopy(proposals))
    for a, b in zip(det_ours, det_up):
        assert torch.equal(a.pred_classes, b.pred_classes)
        _assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        _assert_close(a.scores, b.scores)
        if mask_on:
            _assert_close(a.pred_masks, b.pred_masks)


def _assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    # torch.allclose rather than torch.testing (whose import alone takes ~2 s).
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual, expected)


def _iou_reference(gt_boxes, boxes):
    """IoU of every box with every gt by a slow loop."""
    out = torch.zeros(len(gt_boxes), len(boxes))
    for i, g in enumerate(gt_boxes.tolist()):
        for j, b in enumerate(boxes.tolist()):
            iw = max(0.0, min(g[2], b[2]) - max(g[0], b[0]))
            ih = max(0.0, min(g[3], b[3]) - max(g[1], b[1]))
            inter = iw * ih
            union = (g[2] - g[0]) * (g[3] - g[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            out[i, j] = inter / union if inter > 0 else 0.0
    return out


def test_sampled_proposals_carry_gt_ious_and_matcher_decision(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg, **{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512}), SHAPES).train()
    proposals, targets = _batch()
    with EventStorage() as storage:
        sampled = heads.label_and_sample_proposals(copy.deepcopy(proposals), targets)
        logged = storage.latest()
    for sampled_i, targets_i, proposals_i in zip(sampled, targets, proposals):
        # 512 ROIs asked for, fewer available: every proposal and every appended gt is kept.
        assert len(sampled_i) == len(proposals_i) + len(targets_i)
        iou = _iou_reference(targets_i.gt_boxes.tensor, sampled_i.proposal_boxes.tensor)
        best, best_gt = iou.max(dim=0)
        _assert_close(sampled_i.gt_ious, best)
        assert (
            sampled_i.gt_ious.dtype == torch.float32 and sampled_i.gt_is_matched.dtype == torch.bool
        )
        assert torch.equal(sampled_i.gt_is_matched, best >= 0.5)
        fg = sampled_i.gt_is_matched
        assert torch.equal(sampled_i.gt_classes[fg], targets_i.gt_classes[best_gt[fg]])
        assert (sampled_i.gt_classes[~fg] == K).all()
        _assert_close(sampled_i.gt_boxes.tensor[fg], targets_i.gt_boxes.tensor[best_gt[fg]])
        # The appended gt boxes are matched to themselves with IoU 1.
        for box in targets_i.gt_boxes.tensor:
            rows = (sampled_i.proposal_boxes.tensor == box).all(dim=1)
            assert rows.any() and (sampled_i.gt_ious[rows] == 1.0).all()
        assert len(sampled_i.gt_masks) == len(sampled_i)
    num_fg = [int(s.gt_is_matched.sum()) for s in sampled]
    assert logged["roi_head/num_fg_samples"][0] == pytest.approx(sum(num_fg) / 2)


def test_image_without_gt_gets_background_fields_and_zero_box_loss(sephnet_cfg):
    heads = build_roi_heads(_cfg(sephnet_cfg, **{"MODEL.MASK_ON": True}), SHAPES)
    empty = [_targets([], []), _targets([], [])]
    proposals = [_proposals([], seed=i) for i in range(2)]
    sampled, losses = _train(heads, proposals, empty)
    for s in sampled:
        assert len(s) == 32
        assert (s.gt_classes == K).all() and (s.gt_ious == 0).all() and not s.gt_is_matched.any()
        assert not s.has("gt_boxes")
    assert losses["loss_box_reg"].item() == 0.0
    assert losses["loss_mask"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0


def test_sampler_receives_counts_and_threshold_relabels_low_iou_positives_for_sampling(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        **{
            "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.3],
            "MODEL.SEPH.PREDICTOR.POS_LABELS_THRESHOLD": 0.5,
        }
    )
    heads = build_roi_heads(cfg, SHAPES)
    assert heads.pos_labels_threshold == 0.5
    recorder = RecordingSampler()
    heads.roi_sampler = recorder
    proposals, targets = _batch()
    with EventStorage():
        sampled = heads.label_and_sample_proposals(copy.deepcopy(proposals), targets)
    assert len(recorder.calls) == 2
    for call, s in zip(recorder.calls, sampled):
        assert (
            call["num_samples"] == 32
            and call["positive_fraction"] == 0.25
            and call["bg_label"] == K
        )
        middle = (call["ious"] >= 0.3) & (call["ious"] <= 0.5)
        assert middle.any()  # the fixture has proposals with IoU in [0.3, 0.5]
        assert (call["labels"][middle] == K).all()  # offered to the sampler as background
        assert (call["labels"][call["ious"] > 0.5] < K).all()
        # ... but the sampled ROIs keep the matched class, so box regression trains on them.
        kept_middle = s.gt_is_matched & (s.gt_ious <= 0.5)
        assert (s.gt_classes[kept_middle] < K).all()
        assert torch.equal(s.gt_is_matched, s.gt_ious >= 0.3)


def test_batch_mixing_images_with_and_without_gt_matches_detectron2(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    torch.manual_seed(0)
    ours = build_roi_heads(cfg, SHAPES)
    upstream_cfg = cfg.clone()
    upstream_cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    upstream = build_roi_heads(upstream_cfg, SHAPES)
    ours.load_state_dict(
        {k.replace("box_head.", "box_head.head.", 1): v for k, v in upstream.state_dict().items()}
    )
    proposals, targets = _batch()
    targets[1] = _targets([], [])
    sampled, losses_ours = _train(ours, proposals, targets, seed=5)
    _, losses_up = _train(upstream, proposals, targets, seed=5)
    for key in ("loss_cls", "loss_box_reg"):
        _assert_close(losses_ours[key], losses_up[key], rtol=1e-6, atol=1e-7)
    assert sampled[0].has("gt_boxes") and not sampled[1].has("gt_boxes")
    assert not sampled[1].gt_is_matched.any() and (sampled[1].gt_ious == 0).all()


def test_ignored_proposals_are_never_sampled(sephnet_cfg):
    # IoU in [0.4, 0.5) is "ignore" (-1): such proposals must not reach the box head.
    cfg = _cfg(sephnet_cfg,
        **{
            "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.4, 0.5],
            "MODEL.ROI_HEADS.IOU_LABELS": [0, -1, 1],
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
            "MODEL.SEPH.SAMPLER.NAME": "BalancedROISampler",
        }
    )
    heads = build_roi_heads(cfg, SHAPES)
    proposals, targets = _batch()
    all_ious = [
        _iou_reference(t.gt_boxes.tensor, p.proposal_boxes.tensor).max(dim=0)[0]
        for p, t in zip(proposals, targets)
    ]
    assert any(((v >= 0.4) & (v < 0.5)).any() for v in all_ious)  # the fixture has some
    with EventStorage():
        sampled = heads.label_and_sample_proposals(copy.deepcopy(proposals), targets)
    for s, p, t, v in zip(sampled, proposals, targets, all_ious):
        assert not ((s.gt_ious >= 0.4) & (s.gt_ious < 0.5)).any()
        # everything else is kept (512 asked for): proposals outside the band + appended gt
        kept = int(((v < 0.4) | (v >= 0.5)).sum()) + len(t)
        assert len(s) == kept


def test_sephv2_head_evonorm_balanced_sampler_train_and_eval(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        **{
            "MODEL.MASK_ON": True,
            "MODEL.SEPH.BOX_HEAD.NAME": "FCClsConvBoxHead",
            "MODEL.SEPH.BOX_HEAD.NUM_CONV": 2,
            "MODEL.SEPH.BOX_HEAD.CONV_DIM": 8,
            "MODEL.SEPH.BOX_HEAD.FC_DIM": 16,
            "MODEL.ROI_BOX_HEAD.NORM": "EvoNormS0",
            "MODEL.SEPH.EVONORM.GROUPS": 4,
            "MODEL.ROI_MASK_HEAD.NAME": "SephMaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NORM": "EvoNormS0",
            "MODEL.SEPH.SAMPLER.NAME": "BalancedROISampler",
            "MODEL.SEPH.PREDICTOR.CLS_LOSS_WEIGHTING": "square",
        }
    )
    heads = build_roi_heads(cfg, SHAPES)
    assert isinstance(heads.roi_sampler, BalancedROISampler)
    proposals, targets = _batch()
    _, losses = _train(heads, proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"].item() > 0
    sum(losses.values()).backward()
    assert heads.box_head.box_tower.conv1.weight.grad.abs().sum() > 0

    heads.eval()
    with torch.no_grad():
        detections, extra = heads(_images(), _features(), copy.deepcopy(proposals))
    assert extra == {} and len(detections) == 2
    for d in detections:
        assert isinstance(d, Instances) and d.image_size == (IMAGE, IMAGE)
        assert d.has("pred_boxes") and d.has("scores") and d.has("pred_classes")
        assert d.pred_masks.shape[1:] == (1, 28, 28)  # 14x14 pooling, one 2x deconv


def test_unknown_box_head_or_predictor_name_raises_value_error(sephnet_cfg):
    with pytest.raises(ValueError, match="MODEL.SEPH.BOX_HEAD.NAME='Nope'"):
        build_roi_heads(_cfg(sephnet_cfg, **{"MODEL.SEPH.BOX_HEAD.NAME": "Nope"}), SHAPES)
    with pytest.raises(ValueError, match="MODEL.SEPH.PREDICTOR.NAME='Nope'"):
        build_roi_heads(_cfg(sephnet_cfg, **{"MODEL.SEPH.PREDICTOR.NAME": "Nope"}), SHAPES)


def test_levels_with_different_widths_raise_value_error(sephnet_cfg):
    shapes = dict(SHAPES, p5=ShapeSpec(channels=16, stride=32))
    with pytest.raises(ValueError, match="different channel counts"):
        build_roi_heads(_cfg(sephnet_cfg), shapes)


def test_invalid_constructor_arguments(sephnet_cfg):
    kwargs = SephStandardROIHeads.from_config(_cfg(sephnet_cfg), SHAPES)
    with pytest.raises(ValueError, match="pos_labels_threshold=1.0"):
        SephStandardROIHeads(**dict(kwargs, pos_labels_threshold=1.0))
    with pytest.raises(TypeError, match="roi_sampler must be callable"):
        SephStandardROIHeads(**dict(kwargs, roi_sampler="BalancedROISampler"))
    heads = SephStandardROIHeads(**dict(kwargs, roi_sampler=None))
    assert isinstance(heads.roi_sampler, RandomROISampler)
    # pairwise_iou is the backend's; a sanity check that the fixture has foreground.
    proposals, targets = _batch()
    assert (pairwise_iou(targets[0].gt_boxes, proposals[0].proposal_boxes) >= 0.5).any()
