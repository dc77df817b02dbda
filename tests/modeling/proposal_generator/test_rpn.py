"""SephRPN: detectron2's RPN with anchors labelled by the sephnet anchor matchers."""
import math

import pytest
import torch

from sephnet.backend import (
    RPN,
    Boxes,
    EventStorage,
    ImageList,
    Instances,
    ShapeSpec,
    build_proposal_generator,
    pairwise_iou,
)
from sephnet.modeling.matchers import build_anchor_matcher
from sephnet.modeling.proposal_generator.rpn import SephRPN

MATCHERS = ["ATSSMatcher", "ATSSMatcherPreFix", "ATSSMatcher3", "ATSSMatcher4", "DynamicMatcher"]
SHAPES = {"p3": ShapeSpec(channels=8, stride=8), "p4": ShapeSpec(channels=8, stride=16)}


def tiny_cfg(sephnet_cfg, matcher=""):
    cfg = sephnet_cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "SephRPN"
    cfg.MODEL.SEPH.RPN.MATCHER.NAME = matcher
    cfg.MODEL.RPN.IN_FEATURES = ["p3", "p4"]
    cfg.MODEL.RPN.IOU_THRESHOLDS = [0.4, 0.5]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    return cfg


def tiny_inputs():
    """Two 64x64 images (features 8x8 and 4x4), the second without ground truth."""
    gen = torch.Generator().manual_seed(3)
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 60)])
    features = {
        "p3": torch.randn(2, 8, 8, 8, generator=gen),
        "p4": torch.randn(2, 8, 4, 4, generator=gen),
    }
    gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 60.0, 62.0]]))
    first = Instances((64, 64), gt_boxes=gt_boxes)
    second = Instances((64, 60), gt_boxes=Boxes(torch.zeros(0, 4)))
    return images, features, [first, second]


def train_step(rpn, seed=0):
    images, features, gt = tiny_inputs()
    rpn.train()
    torch.manual_seed(seed)  # anchor sampling draws from the global generator
    with EventStorage():
        proposals, losses = rpn(images, features, gt)
    return proposals, losses


def test_registered_and_built_from_the_config(sephnet_cfg):
    rpn = build_proposal_generator(tiny_cfg(sephnet_cfg, "ATSSMatcher3"), SHAPES)
    assert type(rpn) is SephRPN and isinstance(rpn, RPN)
    assert rpn.box_matcher.ignore_band
    assert build_proposal_generator(tiny_cfg(sephnet_cfg, ""), SHAPES).box_matcher is None


def test_without_matcher_it_equals_the_upstream_rpn(sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, "")
    torch.manual_seed(0)
    upstream = RPN(cfg, SHAPES)
    torch.manual_seed(0)
    seph = SephRPN(cfg, SHAPES)
    up_state, seph_state = upstream.state_dict(), seph.state_dict()
    assert list(up_state) == list(seph_state)
    assert all(torch.equal(up_state[k], seph_state[k]) for k in up_state)
    up_props, up_losses = train_step(upstream)
    seph_props, seph_losses = train_step(seph)
    assert set(up_losses) == set(seph_losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    for key in up_losses:
        assert torch.equal(up_losses[key], seph_losses[key]), key
    for a, b in zip(up_props, seph_props):
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)


@pytest.mark.parametrize("matcher", MATCHERS)
def test_training_forward_gives_finite_losses_with_every_matcher(matcher, sephnet_cfg):
    rpn = SephRPN(tiny_cfg(sephnet_cfg, matcher), SHAPES)
    proposals, losses = train_step(rpn)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_cls"] > 0
    sum(losses.values()).backward()
    assert rpn.rpn_head.objectness_logits.weight.grad.abs().sum() > 0
    assert len(proposals) == 2


@pytest.mark.parametrize("matcher", MATCHERS)
def test_labels_are_the_matcher_labels_when_sampling_keeps_everything(matcher, sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, matcher)
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 100000  # keep every anchor: labels are unsampled
    cfg.MODEL.RPN.POSITIVE_FRACTION = 1.0
    rpn = SephRPN(cfg, SHAPES)
    images, features, gt = tiny_inputs()
    anchors = rpn.anchor_generator([features["p3"], features["p4"]])
    labels, matched_boxes = rpn.label_and_sample_anchors(anchors, gt)
    all_anchors = Boxes.cat(anchors)
    assert [len(a) for a in anchors] == [8 * 8 * 3, 4 * 4 * 3]
    # The RPN passes the per-level sizes; the matcher built from the config gives k = 27.
    matcher_fn = build_anchor_matcher(cfg, 3)
    idxs, expected = matcher_fn(gt[0].gt_boxes, all_anchors, [192, 48])
    assert torch.equal(labels[0], expected)
    assert labels[0].dtype == torch.int8 and (labels[0] == 1).any()
    positive = labels[0] == 1
    assert torch.equal(matched_boxes[0][positive], gt[0].gt_boxes.tensor[idxs[positive]])
    # The image without ground truth: all background, zero matched boxes.
    assert (labels[1] == 0).all() and not matched_boxes[1].any()


def test_sampling_stays_per_image_with_the_upstream_budget(sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, "ATSSMatcher4")
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.RPN.POSITIVE_FRACTION = 0.25
    rpn = SephRPN(cfg, SHAPES)
    _, features, gt = tiny_inputs()
    anchors = rpn.anchor_generator([features["p3"], features["p4"]])
    labels, _ = rpn.label_and_sample_anchors(anchors, gt)
    all_anchors = Boxes.cat(anchors)
    _, unsampled = rpn.box_matcher(gt[0].gt_boxes, all_anchors, [192, 48])
    num_pos = min(int((unsampled == 1).sum()), 4)
    for image_labels in labels:
        assert int((image_labels >= 0).sum()) == 16
    assert int((labels[0] == 1).sum()) == num_pos
    # Sampled positives are matcher positives.
    assert bool((unsampled[labels[0] == 1] == 1).all())


def test_boundary_threshold_ignores_anchors_outside_the_image(sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, "ATSSMatcher")
    cfg.MODEL.RPN.BOUNDARY_THRESH = 0
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 100000
    cfg.MODEL.RPN.POSITIVE_FRACTION = 1.0
    rpn = SephRPN(cfg, SHAPES)
    _, features, gt = tiny_inputs()
    anchors = rpn.anchor_generator([features["p3"], features["p4"]])
    labels, _ = rpn.label_and_sample_anchors(anchors, gt)
    t = Boxes.cat(anchors).tensor
    # detectron2's Boxes.inside_box: x1, y1 >= -thresh and x2, y2 < size + thresh (strict).
    outside = (t[:, 0] < 0) | (t[:, 1] < 0) | (t[:, 2] >= 64) | (t[:, 3] >= 64)
    assert outside.any() and (~outside).any()
    assert (labels[0][outside] == -1).all()
    assert (labels[0][~outside] >= 0).all()


@pytest.mark.parametrize("matcher", ["ATSSMatcher", "ATSSMatcher3"])
def test_works_with_the_per_level_evonorm_head(matcher, sephnet_cfg):
    # sephv17 / sephv14_12: SephRPNHead with a per-level EvoNormS0 and an ATSS matcher.
    from sephnet.modeling.proposal_generator.rpn_head import SephRPNHead

    head = SephRPNHead(
        in_channels=8, num_anchors=3, num_levels=2, norm="EvoNormS0", norm_groups=4
    )
    rpn = SephRPN(tiny_cfg(sephnet_cfg, matcher), SHAPES, head=head)
    assert rpn.rpn_head is head and rpn.box_matcher is not None
    _, losses = train_step(rpn)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert len(head.norms) == 2
    assert all(norm.weight.grad is not None and norm.weight.grad.any() for norm in head.norms)


@pytest.mark.parametrize("matcher", ["", "ATSSMatcher3"])
def test_batch_sampling_draws_one_budget_for_the_whole_batch(matcher, sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, matcher)
    cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED = True
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 40
    cfg.MODEL.RPN.POSITIVE_FRACTION = 0.25
    rpn = SephRPN(cfg, SHAPES)
    assert rpn.sample_over_batch
    _, features, gt = tiny_inputs()
    anchors = rpn.anchor_generator([features["p3"], features["p4"]])
    all_anchors = Boxes.cat(anchors)
    # Unsampled labels, computed independently of SephRPN's sampling code.
    unsampled = []
    for instances in gt:
        if matcher:
            unsampled.append(rpn.box_matcher(instances.gt_boxes, all_anchors, [192, 48])[1])
        elif len(instances.gt_boxes):
            unsampled.append(rpn.anchor_matcher(pairwise_iou(instances.gt_boxes, all_anchors))[1])
        else:
            unsampled.append(torch.zeros(len(all_anchors), dtype=torch.int8))
    labels, _ = rpn.label_and_sample_anchors(anchors, gt)
    sampled = torch.cat(labels)
    # 40 in total over the two images (not 40 each); at most 10 positives; every sampled
    # anchor keeps its matcher label.
    num_pos = int((torch.cat(unsampled) == 1).sum())
    assert int((sampled >= 0).sum()) == 40
    assert int((sampled == 1).sum()) == min(num_pos, 10)
    chosen = sampled >= 0
    assert torch.equal(sampled[chosen], torch.cat(unsampled)[chosen])
    # The second image (no gt) can only contribute negatives.
    assert not (labels[1] == 1).any()
    _, losses = train_step(rpn)
    assert all(torch.isfinite(v) for v in losses.values())


def test_batch_sampling_of_a_single_image_equals_the_upstream_rpn(sephnet_cfg):
    # With one image the batch budget is the per-image budget: same draws, same losses.
    cfg = tiny_cfg(sephnet_cfg, "")
    cfg.MODEL.SEPH.RPN.BATCH_SAMPLING.ENABLED = True
    torch.manual_seed(0)
    upstream = RPN(cfg, SHAPES)
    torch.manual_seed(0)
    seph = SephRPN(cfg, SHAPES)
    images, features, gt = tiny_inputs()
    one_image = ImageList(images.tensor[:1], images.image_sizes[:1])
    one_features = {k: v[:1] for k, v in features.items()}
    results = []
    for rpn in (upstream, seph):
        rpn.train()
        torch.manual_seed(5)
        with EventStorage():
            results.append(rpn(one_image, one_features, gt[:1])[1])
    for key in ("loss_rpn_cls", "loss_rpn_loc"):
        assert torch.equal(results[0][key], results[1][key]), key


def _soft_nms_rpn(sephnet_cfg, method):
    cfg = tiny_cfg(sephnet_cfg)
    cfg.MODEL.RPN.NMS_THRESH = 0.3
    cfg.MODEL.RPN.MIN_SIZE = 0
    cfg.MODEL.SEPH.RPN.TEST_NMS.METHOD = method
    return SephRPN(cfg, SHAPES)


def _hand_made_candidates():
    """Level 0: A [0,0,10,10] logit 2, B [0,0,10,5] logit 1 (IoU(A, B) = 0.5), C far away
    logit 0; level 1: D = A's box, logit 1.5. Zero deltas: the proposals are the anchors."""
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]])),
               Boxes(torch.tensor([[0.0, 0, 10, 10]]))]
    logits = [torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.5]])]
    deltas = [torch.zeros(1, 3, 4), torch.zeros(1, 1, 4)]
    return anchors, logits, deltas, [(100, 100)]


@pytest.mark.parametrize("method, b_weight", [("soft_linear", 1 - 0.5),
                                              ("soft_gaussian", math.exp(-0.25 / 0.5))])
def test_test_time_soft_nms_decays_overlaps_within_a_level(sephnet_cfg, method, b_weight):
    rpn = _soft_nms_rpn(sephnet_cfg, method).eval()
    (out,) = rpn.predict_proposals(*_hand_made_candidates())
    # A and D do not interact (other levels); C does not overlap; B decays by its IoU with A
    b = torch.sigmoid(torch.tensor(1.0)) * b_weight
    assert out.proposal_boxes.tensor.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10],
                                                  [50, 50, 60, 60], [0, 0, 10, 5]]
    torch.testing.assert_close(out.objectness_logits,
                               torch.tensor([2.0, 1.5, 0.0, float(torch.logit(b))]))


def test_training_and_nms_keep_the_backends_selection(sephnet_cfg):
    # NMS at 0.3 removes B; training selects that way even with soft-NMS configured
    for rpn in (_soft_nms_rpn(sephnet_cfg, "nms").eval(),
                _soft_nms_rpn(sephnet_cfg, "soft_linear").train()):
        (out,) = rpn.predict_proposals(*_hand_made_candidates())
        assert out.proposal_boxes.tensor.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10],
                                                      [50, 50, 60, 60]]
