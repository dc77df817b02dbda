"""OHEMROISampler: the highest-loss ROIs, detectron2's counts; wired through SephStandardROIHeads."""
import copy

import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import Boxes, EventStorage, ImageList, Instances, ShapeSpec, build_roi_heads
from sephnet.backend import pairwise_iou
from sephnet.config import validate_sephnet_config
from sephnet.modeling.samplers import OHEMROISampler

BG = 3


def _call(labels, losses, num_samples=4, fraction=0.5):
    n = labels.numel()
    return OHEMROISampler()(
        labels,
        matched_idxs=torch.zeros(n, dtype=torch.int64),
        ious=torch.zeros(n),
        num_samples=num_samples,
        positive_fraction=fraction,
        bg_label=BG,
        roi_losses=losses,
    )


def test_ohem_keeps_the_highest_loss_foreground_and_background():
    labels = torch.tensor([0, 1, BG, BG, BG, -1, 2, BG])
    losses = torch.tensor([0.5, 2.0, 0.1, 3.0, 0.7, 9.0, 1.0, 0.7])
    fg, bg = _call(labels, losses)
    assert fg.tolist() == [1, 6]  # losses 2.0, 1.0 (0.5 dropped)
    assert bg.tolist() == [3, 4]  # 3.0, then the first of the tied 0.7s; the ignored 9.0 never
    # detectron2's counts: 2 foreground available of a quota of 2, background fills the rest
    fg, bg = _call(labels, losses, num_samples=6, fraction=0.25)
    assert fg.tolist() == [1] and bg.tolist() == [3, 4, 7, 2]


def test_ohem_needs_the_losses():
    with pytest.raises(ValueError, match="roi_losses of shape \\[3\\]"):
        _call(torch.tensor([0, BG, BG]), None)


TINY_KEYS = {
    "MODEL.ROI_HEADS.NAME": "SephStandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["p3"],
    "MODEL.ROI_HEADS.NUM_CLASSES": 2,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 8,
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 16,
    "MODEL.SEPH.SAMPLER.NAME": "OHEMROISampler",
}


def _cfg(sephnet_cfg):
    """The shared config with this file's keys."""
    return sephnet_cfg(TINY_KEYS)


class _Recording(OHEMROISampler):
    def __init__(self):
        self.calls = []

    def __call__(self, labels, **kwargs):
        out = super().__call__(labels, **kwargs)
        self.calls.append((labels, kwargs["roi_losses"], out))
        return out


def test_roi_heads_rank_every_candidate_by_its_current_classification_loss(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    validate_sephnet_config(cfg)
    torch.manual_seed(0)
    heads = build_roi_heads(cfg, {"p3": ShapeSpec(channels=4, stride=8)})
    heads.roi_sampler = _Recording()
    features = {"p3": torch.randn(1, 4, 8, 8)}
    target = Instances((64, 64))
    target.gt_boxes = Boxes(torch.tensor([[8.0, 8, 40, 40]]))
    target.gt_classes = torch.tensor([1])
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 40
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.cat([xy, xy + 8 + torch.rand(30, 2, generator=g) * 16], 1))
    proposals.objectness_logits = torch.zeros(30)
    heads.train()
    with EventStorage():
        sampled, losses = heads(
            ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)]), features, [copy.deepcopy(proposals)], [target]
        )
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    (labels, roi_losses, (fg, bg)), = heads.roi_sampler.calls

    # the same losses computed independently: candidates = proposals + the appended gt box
    boxes = torch.cat([proposals.proposal_boxes.tensor, target.gt_boxes.tensor])
    iou = pairwise_iou(target.gt_boxes, Boxes(boxes))[0]
    expected_labels = torch.where(iou >= 0.5, torch.tensor(1), torch.tensor(2))
    assert torch.equal(labels, expected_labels)
    with torch.no_grad():
        pooled = heads.box_pooler([features["p3"]], [Boxes(boxes)])
        logits = heads.box_predictor(heads.box_head(pooled))[0]
    assert torch.allclose(roi_losses, F.cross_entropy(logits, expected_labels, reduction="none"))

    # 8 ROIs: at most 2 foreground, the rest the hardest background
    fg_all = torch.nonzero(expected_labels == 1)[:, 0]
    bg_all = torch.nonzero(expected_labels == 2)[:, 0]
    assert fg.numel() == min(2, fg_all.numel()) and bg.numel() == 8 - fg.numel()
    assert roi_losses[fg].min() >= roi_losses[fg_all].topk(fg.numel()).values.min()
    assert set(bg.tolist()) == set(bg_all[roi_losses[bg_all].topk(bg.numel()).indices].tolist())
    assert torch.equal(sampled[0].proposal_boxes.tensor, boxes[torch.cat([fg, bg])])


def test_ohem_needs_sephstandardroiheads(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    cfg.MODEL.ROI_HEADS.NAME = "SephCascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    with pytest.raises(ValueError, match="only SephStandardROIHeads computes"):
        validate_sephnet_config(cfg)
