"""SephSSD: losses by hand, inference by hand, a training step, checkpoint round trip."""
import math

import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import Boxes, DetectionCheckpointer, EventStorage, Instances, build_model

# VGG16-style base at 64 px: conv4_3 8x8, fc7 4x4, extras 2x2 and 1x1 (4 levels)
TINY = {
    "MODEL.META_ARCHITECTURE": "SephSSD",
    "MODEL.BACKBONE.NAME": "build_seph_ssd_backbone",
    "MODEL.MASK_ON": "False",
    "MODEL.PIXEL_STD": "[58.0, 57.0, 57.0]",
    "MODEL.SEPH.VGG.WIDTHS": "[4, 4, 8, 8, 8]",
    "MODEL.SEPH.VGG.FC_WIDTH": "8",
    "MODEL.SEPH.VGG.FC6_DILATION": "2",
    "MODEL.SEPH.SSD.NUM_CLASSES": "3",
    "MODEL.SEPH.SSD.INPUT_SIZE": "64",
    "MODEL.SEPH.SSD.EXTRA_CHANNELS": "[8, 8]",
    "MODEL.SEPH.SSD.EXTRA_STRIDES": "[2, 2]",
    "MODEL.SEPH.SSD.EXTRA_KERNEL_SIZES": "[3, 3]",
    "MODEL.SEPH.SSD.EXTRA_PADDINGS": "[1, 1]",
    "MODEL.SEPH.SSD.PRIOR_MIN_SIZES": "[8.0, 16.0, 32.0, 48.0]",
    "MODEL.SEPH.SSD.PRIOR_MAX_SIZES": "[16.0, 32.0, 48.0, 64.0]",
    "MODEL.SEPH.SSD.PRIOR_ASPECT_RATIOS": "[[2.0], [2.0, 3.0], [2.0], [2.0]]",
    "MODEL.SEPH.SSD.PRIOR_STRIDES": "[8.0, 16.0, 32.0, 64.0]",
}
NUM_PRIORS = 8 * 8 * 4 + 4 * 4 * 6 + 2 * 2 * 4 + 1 * 4


@pytest.fixture
def model(sephnet_cfg):
    return build_model(sephnet_cfg(TINY, validate=True))


def _input(height=48, width=96, boxes=((8.0, 8.0, 40.0, 40.0), (50.0, 10.0, 90.0, 44.0)), classes=(0, 2)):
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    return {"image": image, "instances": instances, "height": 2 * height, "width": 2 * width}


def test_training_step_gives_finite_losses_and_gradients_everywhere(model):
    model.train()
    with EventStorage(0) as storage:
        losses = model([_input(), _input(boxes=(), classes=())])
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert storage.latest()["num_pos_priors"][0] > 0
    sum(losses.values()).backward()
    for part in (model.backbone.base, model.backbone.extras, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_image_without_objects_has_zero_losses(model):
    model.train()
    with EventStorage(0):
        losses = model([_input(boxes=(), classes=())])
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0


def test_ground_truth_is_scaled_to_the_square_input(model):
    priors = torch.cat(model.prior_generator([(8, 8), (4, 4), (2, 2), (1, 1)]))
    # a 48 x 96 image: x scales by 64 / 96, y by 64 / 48; this box becomes exactly prior 0's
    prior = priors[0]
    box = prior * torch.tensor([96 / 64, 48 / 64, 96 / 64, 48 / 64])
    classes, deltas = model.label_priors(priors, [_input(boxes=[box.tolist()], classes=[1])], [(48, 96)])
    assert classes.shape == (1, NUM_PRIORS) and deltas.shape == (1, NUM_PRIORS, 4)
    assert classes[0, 0] == 1
    torch.testing.assert_close(deltas[0, 0], torch.zeros(4), atol=1e-5, rtol=0)
    assert (classes[0, 1:] <= 3).all()


def test_losses_by_hand(model):
    """One image, 4 priors, K = 1: prior 0 positive (class 0), priors 1-3 negative; with
    NEG_POS_RATIO 1 only the negative of largest cross-entropy (prior 2) counts."""
    model.neg_pos_ratio = 1.0
    model.smooth_l1_beta = 1.0
    model.num_classes = 1
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.5, 0.0]]])
    gt_classes = torch.tensor([[0, 1, 1, 1]])
    deltas = torch.tensor([[[0.5, -2.0, 0.0, 0.0]] + [[9.0] * 4] * 3])
    gt_deltas = torch.zeros(1, 4, 4)
    with EventStorage(0):
        losses = model.losses(logits, deltas, gt_classes, gt_deltas)
    ce_positive = math.log(1 + math.exp(-1.0))  # -log softmax([1, 0])[0]
    ce_prior2 = math.log(1 + math.exp(2.0))  # -log softmax([2, 0])[1], the largest of 1-3
    assert losses["loss_cls"].item() == pytest.approx(ce_positive + ce_prior2, rel=1e-6)
    assert losses["loss_box_reg"].item() == pytest.approx(0.5 * 0.5**2 + (2.0 - 0.5), rel=1e-6)


def test_inference_by_hand(model):
    """Two overlapping priors of one class (NMS keeps the better), a third below the score
    threshold; zero deltas decode to the priors themselves."""
    model.num_classes = 2
    model.score_threshold = 0.3
    priors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [2.0, 2.0, 34.0, 34.0], [40.0, 40.0, 60.0, 60.0]])
    logits = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]]))
    result = model.inference_single_image(logits, torch.zeros(3, 4), priors)
    assert result.image_size == (64, 64)
    assert result.pred_classes.tolist() == [0]
    assert result.scores.tolist() == pytest.approx([0.8])
    assert result.pred_boxes.tensor.tolist() == [[0.0, 0.0, 32.0, 32.0]]


def test_inference_returns_boxes_in_the_requested_size(model):
    model.eval()
    model.score_threshold = 0.0
    with torch.no_grad():
        (output,) = model([{k: v for k, v in _input().items() if k != "instances"}])
    instances = output["instances"]
    assert instances.image_size == (96, 192)
    assert 0 < len(instances) <= 200
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 2] <= 192).all() and (boxes[:, 3] <= 96).all() and (boxes >= 0).all()


def test_checkpoint_round_trip(model, sephnet_cfg, tmp_path):
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("ssd")
    other = build_model(sephnet_cfg(TINY))
    DetectionCheckpointer(other).load(str(tmp_path / "ssd.pth"))
    data = [{k: v for k, v in _input().items() if k != "instances"}]
    model.eval(), other.eval()
    with torch.no_grad():
        a, b = model(data)[0]["instances"], other(data)[0]["instances"]
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    torch.testing.assert_close(a.scores, b.scores)


def test_levels_that_disagree_with_the_priors_are_refused(sephnet_cfg):
    keys = dict(TINY)
    keys["MODEL.SEPH.SSD.EXTRA_CHANNELS"] = "[8]"
    for key in ("EXTRA_STRIDES", "EXTRA_KERNEL_SIZES", "EXTRA_PADDINGS"):
        keys[f"MODEL.SEPH.SSD.{key}"] = "[1]"
    with pytest.raises(ValueError, match="gives 2 feature maps and EXTRA_CHANNELS adds 1"):
        sephnet_cfg(keys, validate=True)  # at setup
    with pytest.raises(ValueError, match="the backbone gives 3 feature maps"):
        build_model(sephnet_cfg(keys))  # and when built without the setup check


def test_head_layout_matches_the_priors(model):
    features = [torch.zeros(1, 8, 2, 2), torch.zeros(1, 8, 1, 1)]
    head = type(model.head)(in_channels=[8, 8], num_priors=[4, 6], num_classes=1)
    # make every output channel's value its channel index, to read the layout back
    for conv in list(head.cls_convs) + list(head.box_convs):
        torch.nn.init.zeros_(conv.weight)
        conv.bias.data = torch.arange(conv.out_channels, dtype=torch.float32)
    cls_logits, box_deltas = head(features)
    assert cls_logits.shape == (1, 2 * 2 * 4 + 6, 2) and box_deltas.shape == (1, 22, 4)
    # location 0's priors 0..3, then location 1's: prior a's class scores are channels 2a, 2a+1
    assert cls_logits[0, :5].tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [0, 1]]
    assert box_deltas[0, 16 + 5].tolist() == [20, 21, 22, 23]


def test_vgg16_feature_sizes_at_300(sephnet_cfg):
    from sephnet.modeling.backbone.vgg import VGG16

    vgg = VGG16(widths=(2, 2, 2, 2, 2), fc_width=2)
    outputs = vgg(torch.zeros(1, 3, 300, 300))
    assert {k: tuple(v.shape[-2:]) for k, v in outputs.items()} == {"conv4_3": (38, 38), "fc7": (19, 19)}
    # conv4_3 is L2-normalised with scale 20
    norms = outputs["conv4_3"].norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.tensor(20.0), rtol=1e-4)
    assert F.relu(outputs["fc7"]).equal(outputs["fc7"])
