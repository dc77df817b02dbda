"""GeneralizedRCNN / ProposalNetwork plumbing with stub components: normalisation and padding,
loss merging, precomputed proposals, given boxes, output rescaling, registry and errors."""
from typing import Dict, List

import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.backbone import Backbone
from sephnet.d2.modeling.meta_arch import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    ProposalNetwork,
    build_model,
)
from sephnet.d2.structures import Boxes, ImageList, Instances
from sephnet.d2.utils.events import EventStorage

MEAN = (10.0, 20.0, 30.0)
STD = (2.0, 4.0, 5.0)


class _StubBackbone(Backbone):
    """Returns the normalised batch itself as feature "p" (stride 1), padded to 16."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    @property
    def size_divisibility(self) -> int:
        return 16

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"p": x * self.scale}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {"p": ShapeSpec(channels=3, stride=1)}


class _StubProposals(nn.Module):
    """One proposal per image covering its top-left quarter; records what it was given."""

    def forward(self, images: ImageList, features, gt_instances=None):
        self.seen = (images, features, gt_instances)
        proposals = []
        for h, w in images.image_sizes:
            p = Instances((h, w))
            p.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, w / 2, h / 2]]))
            p.objectness_logits = torch.tensor([1.0])
            proposals.append(p)
        loss = {"loss_rpn_cls": features["p"].mean() * 0 + 1.0} if self.training else {}
        return proposals, loss


class _StubROIHeads(nn.Module):
    """Turns each proposal into a detection with score 0.5, class 1."""

    def forward(self, images, features, proposals: List[Instances], targets=None):
        self.seen_proposals = proposals
        if self.training:
            return proposals, {"loss_cls": torch.tensor(2.0)}
        return [self._detect(p.image_size, p.proposal_boxes) for p in proposals], {}

    def forward_with_given_boxes(self, features, instances: List[Instances]):
        for inst in instances:
            inst.scores = torch.full((len(inst),), 0.9)
        return instances

    @staticmethod
    def _detect(image_size, boxes: Boxes) -> Instances:
        out = Instances(image_size)
        out.pred_boxes = Boxes(boxes.tensor.clone())
        out.scores = torch.full((len(boxes),), 0.5)
        out.pred_classes = torch.ones(len(boxes), dtype=torch.int64)
        return out


def _rcnn(proposal_generator="stub", **kwargs) -> GeneralizedRCNN:
    return GeneralizedRCNN(
        backbone=_StubBackbone(),
        proposal_generator=_StubProposals() if proposal_generator == "stub" else proposal_generator,
        roi_heads=_StubROIHeads(),
        pixel_mean=MEAN,
        pixel_std=STD,
        **kwargs,
    )


def _image(h: int, w: int) -> torch.Tensor:
    return torch.arange(3 * h * w, dtype=torch.float32).view(3, h, w) % 255


def test_preprocess_normalises_per_channel_and_pads_to_size_divisibility():
    model = _rcnn()
    a, b = _image(20, 30), _image(10, 34)
    images = model.preprocess_image([{"image": a}, {"image": b}])
    assert images.tensor.shape == (2, 3, 32, 48)
    assert images.image_sizes == [(20, 30), (10, 34)]
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(images.tensor[0, :, :20, :30], (a - mean) / std)
    assert torch.allclose(images.tensor[1, :, :10, :34], (b - mean) / std)
    assert images.tensor[0, :, 20:, :].abs().sum() == 0
    assert images.tensor[1, :, :, 34:].abs().sum() == 0


def test_pixel_statistics_are_non_persistent_buffers():
    model = _rcnn()
    assert "pixel_mean" not in model.state_dict() and "pixel_std" not in model.state_dict()
    assert model.pixel_mean.shape == (3, 1, 1)
    assert model.device == torch.device("cpu")
    assert torch.equal(model.pixel_std.flatten(), torch.tensor(STD))


def test_training_merges_detector_and_proposal_losses_and_moves_gt():
    model = _rcnn().train()
    gt = Instances((20, 30))
    gt.gt_boxes = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    with EventStorage(0):
        losses = model([{"image": _image(20, 30), "instances": gt}])
    assert list(losses) == ["loss_cls", "loss_rpn_cls"]
    assert losses["loss_cls"].item() == 2.0 and losses["loss_rpn_cls"].item() == 1.0
    (seen_gt,) = model.proposal_generator.seen[2]
    assert torch.equal(seen_gt.gt_boxes.tensor, gt.gt_boxes.tensor)


def test_inference_rescales_to_requested_size_and_defaults_to_input_size():
    model = _rcnn().eval()
    inputs = [
        {"image": _image(20, 30), "height": 40, "width": 90},  # scale (x3, x2)
        {"image": _image(10, 34)},  # no requested size: stays at the network input size
    ]
    first, second = model(inputs)
    assert first["instances"].image_size == (40, 90)
    expected = torch.tensor([[0.0, 0.0, 45.0, 20.0]])
    assert torch.equal(first["instances"].pred_boxes.tensor, expected)
    assert second["instances"].image_size == (10, 34)
    expected = torch.tensor([[0.0, 0.0, 17.0, 5.0]])
    assert torch.equal(second["instances"].pred_boxes.tensor, expected)

    (raw,) = model.inference(inputs[:1], do_postprocess=False)
    assert isinstance(raw, Instances) and raw.image_size == (20, 30)


def test_inference_with_given_boxes_skips_detection():
    model = _rcnn().eval()
    given = Instances((20, 30))
    given.pred_boxes = Boxes(torch.tensor([[1.0, 1.0, 5.0, 5.0]]))
    given.pred_classes = torch.tensor([0])
    (out,) = model.inference([{"image": _image(20, 30)}], detected_instances=[given])
    assert torch.equal(out["instances"].scores, torch.tensor([0.9]))
    with pytest.raises(RuntimeError, match="eval mode"):
        model.train().inference([{"image": _image(20, 30)}])


def test_precomputed_proposals_are_read_from_the_inputs():
    model = _rcnn(proposal_generator=None).eval()
    proposals = Instances((20, 30))
    proposals.proposal_boxes = Boxes(torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    proposals.objectness_logits = torch.tensor([0.0])
    (out,) = model([{"image": _image(20, 30), "proposals": proposals}])
    assert torch.equal(out["instances"].pred_boxes.tensor, torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    with pytest.raises(KeyError, match="proposals"):
        model([{"image": _image(20, 30)}])
    model.train()
    with EventStorage(0):
        losses = model([{"image": _image(20, 30), "proposals": proposals}])
    assert list(losses) == ["loss_cls"]


def test_constructor_errors():
    with pytest.raises(ValueError, match="different shapes"):
        GeneralizedRCNN(
            backbone=_StubBackbone(),
            proposal_generator=None,
            roi_heads=_StubROIHeads(),
            pixel_mean=(1.0, 2.0, 3.0),
            pixel_std=(1.0,),
        )
    with pytest.raises(ValueError, match="input_format"):
        _rcnn(vis_period=10)


def test_proposal_network_returns_losses_in_training_and_rescaled_proposals_in_eval():
    model = ProposalNetwork(
        backbone=_StubBackbone(),
        proposal_generator=_StubProposals(),
        pixel_mean=MEAN,
        pixel_std=STD,
    )
    assert "pixel_mean" not in model.state_dict()
    model.train()
    gt = Instances((20, 30))
    gt.gt_boxes = Boxes(torch.zeros(0, 4))
    assert set(model([{"image": _image(20, 30), "instances": gt}])) == {"loss_rpn_cls"}
    # The legacy input key "targets" still reaches the proposal generator as ground truth.
    model([{"image": _image(20, 30), "targets": gt}])
    assert model.proposal_generator.seen[2][0] is not None
    model.eval()
    (out,) = model([{"image": _image(20, 30), "height": 10, "width": 60}])
    assert out["proposals"].image_size == (10, 60)
    expected = torch.tensor([[0.0, 0.0, 30.0, 5.0]])
    assert torch.equal(out["proposals"].proposal_boxes.tensor, expected)


def test_build_model_uses_the_registry_and_device():
    assert META_ARCH_REGISTRY.get("GeneralizedRCNN") is GeneralizedRCNN
    assert META_ARCH_REGISTRY.get("ProposalNetwork") is ProposalNetwork
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    model = build_model(cfg)
    assert isinstance(model, ProposalNetwork)
    assert model.proposal_generator.in_features == ["res4"]
    assert torch.equal(model.pixel_mean.flatten(), torch.tensor(cfg.MODEL.PIXEL_MEAN))
    cfg.MODEL.META_ARCHITECTURE = "NoSuchArch"
    with pytest.raises(KeyError, match="NoSuchArch"):
        build_model(cfg)


def test_training_visualization_every_vis_period_iterations():
    model = _rcnn(vis_period=2, input_format="BGR").train()
    gt = Instances((20, 30))
    gt.gt_boxes = Boxes(torch.tensor([[1.0, 2.0, 12.0, 14.0]]))
    inputs = [{"image": _image(20, 30), "instances": gt}] * 2
    with EventStorage(0) as storage:
        model(inputs)  # iteration 0: drawn
        storage.step()
        model(inputs)  # iteration 1: not drawn
        images = list(storage._vis_data)
    assert len(images) == 1
    name, picture, iteration = images[0]
    assert iteration == 0 and "ground-truth boxes" in name
    # Ground truth (left) and proposals (right) of the first image, side by side, CHW.
    assert picture.shape == (3, 20, 60)
