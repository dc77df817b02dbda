"""SephDETR end to end on a tiny model: losses and gradients, inference in input pixels,
the optimizer of the recipe, and a checkpoint round trip."""
import pytest
import torch

from sephnet.backend import Boxes, DetectionCheckpointer, EventStorage, Instances, build_model
from sephnet.layers.box_ops import box_cxcywh_to_xyxy
from sephnet.solver import build_optimizer

TINY = {
    "MODEL.META_ARCHITECTURE": "SephDETR",
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.FREEZE_AT": "0",
    "MODEL.RESNETS.DEPTH": "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS": "64",
    "MODEL.RESNETS.NORM": "GN",
    "MODEL.RESNETS.OUT_FEATURES": "['res4']",
    "MODEL.SEPH.DETR.IN_FEATURE": "res4",
    "MODEL.SEPH.DETR.NUM_CLASSES": "3",
    "MODEL.SEPH.DETR.NUM_QUERIES": "5",
    "MODEL.SEPH.DETR.HIDDEN_DIM": "16",
    "MODEL.SEPH.DETR.NHEADS": "2",
    "MODEL.SEPH.DETR.DIM_FEEDFORWARD": "32",
    "MODEL.SEPH.DETR.ENC_LAYERS": "1",
    "MODEL.SEPH.DETR.DEC_LAYERS": "2",
    "MODEL.SEPH.DETR.DROPOUT": "0.0",
    "TEST.DETECTIONS_PER_IMAGE": "3",
}


@pytest.fixture
def cfg(sephnet_cfg):
    return sephnet_cfg(TINY, validate=True)


def _inputs(h=64, w=48):
    instances = Instances((h, w))
    instances.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 30.0, 44.0, 60.0]]))
    instances.gt_classes = torch.tensor([0, 2])
    return {"image": torch.randint(0, 256, (3, h, w)).float(), "instances": instances}


def test_training_step_gives_every_layers_losses_and_gradients(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    with EventStorage(0):
        losses = model([_inputs(), _inputs(48, 64)])
    assert set(losses) == {f"{n}{s}" for n in ("loss_cls", "loss_bbox", "loss_giou") for s in ("", "_0")}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name in ("backbone.stem.conv1.weight", "input_proj.weight", "query_embed.weight",
                 "transformer.encoder_layers.0.self_attn.in_proj_weight", "class_embed.weight",
                 "bbox_embed.4.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_inference_scales_the_best_queries_to_the_requested_size(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = _inputs()["image"]
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 128, "width": 96}])
        logits, boxes = model.predict(model.preprocess_image([{"image": image}]))
    instances = result["instances"]
    assert instances.image_size == (128, 96) and len(instances) == 3
    probs = logits[-1, 0].softmax(-1)[:, :-1]
    scores, classes = probs.max(-1)
    best = scores.argsort(descending=True)[:3]
    torch.testing.assert_close(instances.scores, scores[best])
    assert instances.pred_classes.tolist() == classes[best].tolist()
    # normalised cxcywh of the 48x64 input -> pixels of the 96x128 output: x by 96, y by 128
    expected = box_cxcywh_to_xyxy(boxes[-1, 0, best]) * torch.tensor([96.0, 128.0, 96.0, 128.0])
    torch.testing.assert_close(instances.pred_boxes.tensor, expected.clamp(min=0).minimum(
        torch.tensor([96.0, 128.0, 96.0, 128.0])))


def test_recipe_optimizer_is_adamw_with_a_slower_backbone(cfg):
    cfg.MODEL.SEPH.SOLVER.OPTIMIZER = "AdamW"
    cfg.MODEL.SEPH.SOLVER.BACKBONE_LR_FACTOR = 0.1
    cfg.SOLVER.BASE_LR = 1e-4
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr[id(model.backbone.stem.conv1.weight)] == pytest.approx(1e-5)
    assert lr[id(model.query_embed.weight)] == pytest.approx(1e-4)
    assert len(lr) == len([p for p in model.parameters() if p.requires_grad])


def test_checkpoint_round_trip(cfg, tmp_path):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("detr")
    torch.manual_seed(1)
    restored = build_model(cfg).eval()
    DetectionCheckpointer(restored).load(str(tmp_path / "detr.pth"))
    image = {"image": _inputs()["image"]}
    with torch.no_grad():
        a, b = model([image])[0]["instances"], restored([image])[0]["instances"]
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    torch.testing.assert_close(a.scores, b.scores)


def test_refuses_an_in_feature_the_backbone_lacks(sephnet_cfg):
    cfg = sephnet_cfg({**TINY, "MODEL.SEPH.DETR.IN_FEATURE": "res5"})
    with pytest.raises(ValueError, match="res5"):
        build_model(cfg)
