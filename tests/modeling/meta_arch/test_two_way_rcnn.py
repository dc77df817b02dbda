"""SephGeneralizedRCNN: routing of (rpn, roi) features; tiny full models with hooks and necks
train one step and predict."""
import copy

import pytest
import torch

from sephnet.backend import Boxes, EventStorage, Instances, build_model
from sephnet.config import validate_sephnet_config
from sephnet.modeling.meta_arch import SephGeneralizedRCNN

IMAGE = 64


def _cfg(sephnet_cfg, backbone="build_seph_tf_fpn_backbone", **keys):
    """Narrow R-50 (res5: 128 ch), 16-wide necks, tiny ROI heads, CPU."""
    cfg = sephnet_cfg(narrow_r50=4)
    cfg.MODEL.META_ARCHITECTURE = "SephGeneralizedRCNN"
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.NORM = "EvoNormS0"
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128]]
    cfg.MODEL.RPN.IN_FEATURES = ["p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    for key, value in keys.items():
        cfg.merge_from_list([key, value])
    validate_sephnet_config(cfg)
    return cfg


def _inputs():
    def one(boxes, classes):
        inst = Instances((IMAGE, IMAGE))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(classes)
        return {"image": torch.rand(3, IMAGE, IMAGE) * 255, "instances": inst,
                "height": IMAGE, "width": IMAGE}

    return [one([[4, 4, 40, 30], [20, 24, 60, 62]], [0, 2]), one([[8, 10, 50, 56]], [1])]


def _train_step_and_predict(cfg):
    model = build_model(cfg)
    assert isinstance(model, SephGeneralizedRCNN)
    model.train()
    with EventStorage():
        losses = model(_inputs())
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    params = model.backbone.named_parameters()
    neck_grads = [p.grad for n, p in params if not n.startswith("bottom_up")]
    assert neck_grads and all(g is not None for g in neck_grads)
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    model.eval()
    with torch.no_grad():
        out = model(_inputs())
    assert len(out) == 2 and all(o["instances"].image_size == (IMAGE, IMAGE) for o in out)
    return model


@pytest.mark.parametrize(
    "backbone,keys",
    [
        # sephv14_32 style: non-local before, fusion after, ROI heads pool from f3 alone
        ("build_seph_tf_fpn_backbone", {
            "MODEL.SEPH.BACKBONE_HOOKS.BEFORE": "NonLocalBackboneHook",
            "MODEL.SEPH.BACKBONE_HOOKS.AFTER": "FusionBackboneHook",
            "MODEL.ROI_HEADS.IN_FEATURES": ["f3"],
        }),
        # sephv14_3 / sephv26: balance V2 (doubled channels) after, SE before; balance on RPN
        ("build_seph_tf_fpn_backbone", {
            "MODEL.SEPH.BACKBONE_HOOKS.BEFORE": "SEBackboneHook",
            "MODEL.SEPH.BACKBONE_HOOKS.AFTER": "BalanceBackboneHook",
            "MODEL.SEPH.BACKBONE_HOOKS.BALANCE.VERSION": "V2",
            "MODEL.FPN.FUSE_TYPE": "mix_fusion",
            "MODEL.SEPH.NECKS.TF_FPN.MIX_FUSION_CHANNELS": 4,
        }),
        ("build_seph_tf_fpn_backbone", {"MODEL.SEPH.BACKBONE_HOOKS.RPN": "BalanceBackboneHook"}),
        # bifpn v1_1: C3..C6 inputs, 2 cells, balance after
        ("build_seph_bifpn_backbone", {
            "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
            "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
            "MODEL.SEPH.NECKS.BIFPN.NUM_CELLS": 2,
            "MODEL.SEPH.NECKS.BIFPN.SIZE_DIVISIBILITY": 64,
            "MODEL.SEPH.BACKBONE_HOOKS.AFTER": "BalanceBackboneHook",
        }),
        # wtwfpn v1_1: two FPNs on C3..C6 with wsum, balance on the RPN's
        ("build_seph_two_way_fpn_backbone", {
            "MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
            "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
            "MODEL.SEPH.NECKS.TF_FPN.NUM_TOP_LEVELS": 0,
            "MODEL.FPN.FUSE_TYPE": "wsum",
            "MODEL.SEPH.BACKBONE_HOOKS.RPN": "BalanceBackboneHook",
        }),
    ],
)
def test_tiny_model_trains_one_step_and_predicts(backbone, keys, sephnet_cfg):
    # the helper asserts losses, gradients and predictions; here: it ends in eval mode
    model = _train_step_and_predict(_cfg(sephnet_cfg, backbone, **keys))
    assert isinstance(model, SephGeneralizedRCNN) and not model.training


def test_two_way_model_feeds_rpn_and_roi_heads_their_own_dicts(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        "build_seph_two_way_fpn_backbone",
        **{"MODEL.SEPH.NECKS.EXTRA_LEVELS": 1,
           "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5", "res6"],
           "MODEL.SEPH.NECKS.TF_FPN.NUM_TOP_LEVELS": 0},
    )
    model = build_model(cfg)
    seen = {}
    model.proposal_generator.register_forward_pre_hook(
        lambda m, args: seen.__setitem__("rpn", args[1]["p3"]))
    model.roi_heads.register_forward_pre_hook(
        lambda m, args: seen.__setitem__("roi", args[1]["p3"]))
    model.eval()
    inputs = _inputs()
    with torch.no_grad():
        model(inputs)
        images = model.preprocess_image(inputs)
        roi = model.backbone(images.tensor)
        rpn = roi.rpn
    assert torch.equal(seen["rpn"], rpn["p3"]) and torch.equal(seen["roi"], roi["p3"])
    assert not torch.equal(rpn["p3"], roi["p3"])
    model.train()
    with EventStorage():
        losses = model(inputs)
    sum(losses.values()).backward()
    rpn_fpn = model.backbone.neck.rpn_fpn.outputs["res3"].weight.grad
    roi_fpn = model.backbone.neck.roi_fpn.outputs["res3"].weight.grad
    assert rpn_fpn is not None and roi_fpn is not None


def test_one_dict_backbone_gives_exactly_generalized_rcnn_results(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    model = build_model(cfg)
    cfg_plain = cfg.clone()
    cfg_plain.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    plain = build_model(cfg_plain)
    plain.load_state_dict(model.state_dict())
    inputs = _inputs()
    for m in (model, plain):
        m.train()
    torch.manual_seed(3)
    with EventStorage():
        ours = model(copy.deepcopy(inputs))
    torch.manual_seed(3)
    with EventStorage():
        theirs = plain(copy.deepcopy(inputs))
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])
    model.eval()
    plain.eval()
    with torch.no_grad():
        a, b = model(inputs), plain(inputs)
        raw = model.inference(inputs, do_postprocess=False)
        given = model.inference(inputs, detected_instances=[o["instances"] for o in a])
    for x, y in zip(a, b):
        xb, yb = x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor
        torch.testing.assert_close(xb, yb)
        torch.testing.assert_close(x["instances"].scores, y["instances"].scores)
    assert len(raw) == 2 and isinstance(raw[0], Instances)
    assert len(given) == 2


def test_two_dict_backbones_need_the_seph_meta_architecture(sephnet_cfg):
    with pytest.raises(ValueError, match="META_ARCHITECTURE='SephGeneralizedRCNN'"):
        _cfg(sephnet_cfg, "build_seph_two_way_fpn_backbone", **{"MODEL.META_ARCHITECTURE": "GeneralizedRCNN"})
    with pytest.raises(ValueError, match="RPN='BalanceBackboneHook'.*SephGeneralizedRCNN"):
        _cfg(sephnet_cfg, **{"MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
                "MODEL.SEPH.BACKBONE_HOOKS.RPN": "BalanceBackboneHook"})
