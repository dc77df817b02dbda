"""Tiny full models (narrow R-50 FPN, 64x64 images) with an ROI hook, with the multi-scale
pooler + context heads, and with the size-expert head train one step and predict through
SephStandardROIHeads."""
import pytest
import torch

from sephnet.backend import Boxes, EventStorage, Instances, build_model
from sephnet.config import validate_sephnet_config
from sephnet.modeling.roi_heads.decoupled_features import ContextPair
from sephnet.modeling.roi_heads.poolers.multiscale_pooler import MultiScaleROIPooler
from sephnet.modeling.roi_heads.hooks.roi_hooks import HookedBoxHead
from sephnet.modeling.roi_heads.box_heads.size_expert_head import BoxSizeROIPooler

IMAGE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convs are ~50x slower with intra-op threads on the shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(sephnet_cfg, **keys):
    cfg = sephnet_cfg(narrow_r50=4)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 40
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.NORM = "EvoNormS0"
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    head = cfg.MODEL.SEPH.BOX_HEAD
    head.NAME, head.NUM_CONV, head.CONV_DIM, head.NUM_FC, head.FC_DIM = (
        "FCClsConvBoxHead", 1, 16, 1, 16,
    )
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
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model(_inputs())
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    box_head = model.roi_heads.box_head
    grads = [p.grad for p in box_head.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    model.eval()
    with torch.no_grad():
        out = model(_inputs())
    assert len(out) == 2 and all(o["instances"].image_size == (IMAGE, IMAGE) for o in out)
    return model


@pytest.mark.parametrize(
    "keys",
    [
        {"MODEL.SEPH.ROI_HOOK.NAME": "OneHeadNonLocalROIHeadsHook"},  # sephv14_14
        {"MODEL.SEPH.ROI_HOOK.NAME": "NonLocalROIHeadsHook",  # sephv7 (gamma version)
         "MODEL.SEPH.ROI_HOOK.WEIGHTED_RESIDUAL": True},
        {"MODEL.SEPH.ROI_HOOK.NAME": "OneHeadCBAMROIHeadsHook", "MODEL.SEPH.ROI_HOOK.SE_RATIO": 4},
    ],
)
def test_model_with_an_roi_hook_trains_and_predicts(keys, sephnet_cfg):
    model = _train_step_and_predict(_cfg(sephnet_cfg, **keys))
    assert isinstance(model.roi_heads.box_head, HookedBoxHead)
    assert model.roi_heads.box_head.hook.preset == keys["MODEL.SEPH.ROI_HOOK.NAME"]


@pytest.mark.parametrize(
    "keys",
    [
        {},  # sephv19: FCClsConvBoxHead, cls tower on the box crop, box tower on the 1.5x context
        {"MODEL.SEPH.BOX_HEAD.NAME": "BoxQueryAttentionHead"},  # V5, sephv25 (1.5x, 7x7)
        {"MODEL.SEPH.BOX_HEAD.NAME": "ContextStripAttentionHead",  # V7, sephv25_2
         "MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_SCALE": 13 / 7,
         "MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION": 13},
        {"MODEL.SEPH.ROI_HOOK.NAME": "IouHeadNonLocalROIHeadsHook",  # iou5
         "MODEL.SEPH.IOU_BRANCH.ENABLED": True,
         "MODEL.SEPH.BOX_HEAD.IOU_NUM_CONV": 1, "MODEL.SEPH.BOX_HEAD.IOU_NUM_FC": 0,
         "MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_SCALE": 13 / 7,
         "MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION": 13},
    ],
)
def test_model_with_the_multiscale_pooler_trains_and_predicts(keys, sephnet_cfg):
    model = _train_step_and_predict(_cfg(sephnet_cfg, **{"MODEL.SEPH.MULTISCALE_POOLER.ENABLED": True, **keys}))
    pooler = model.roi_heads.box_pooler
    assert isinstance(pooler, MultiScaleROIPooler)
    feats = [torch.randn(1, 16, IMAGE // s, IMAGE // s) for s in (4, 8, 16, 32)]
    crops = pooler(feats, [Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]))])
    assert isinstance(crops, ContextPair)
    m = crops.context.shape[-1]
    assert m == keys.get("MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION", 7)


@pytest.mark.parametrize("stacked", [False, True])
def test_model_with_the_size_expert_head_trains_and_predicts(stacked, sephnet_cfg):
    # sephv14_20 (V9); stacked=True is the log's literal two linear maps in a row
    model = _train_step_and_predict(_cfg(sephnet_cfg, **{
        "MODEL.SEPH.BOX_HEAD.NAME": "SizeExpertHead",
        "MODEL.SEPH.SIZE_EXPERT_HEAD.STACKED_LINEAR": stacked,
    }))
    assert isinstance(model.roi_heads.box_pooler, BoxSizeROIPooler)
