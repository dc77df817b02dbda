"""SephMaskRCNNConvUpsampleHead: detectron2's head without a norm; norm on convs and deconv,
and never a ReLU after EvoNormS0, with one."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import (
    ROI_MASK_HEAD_REGISTRY,
    BitMasks,
    Boxes,
    EventStorage,
    Instances,
    MaskRCNNConvUpsampleHead,
    ShapeSpec,
    build_mask_head,
)
from sephnet.layers.evonorm import EvoNormS0
from sephnet.modeling.roi_heads.mask_head import SephMaskRCNNConvUpsampleHead

SHAPE = ShapeSpec(channels=8, height=7, width=7)


def _execution_order(head):
    """Leaf modules in the order forward() applies them (Conv2d: conv, then norm, then act)."""
    order = []
    for child in head:
        order.append(child)
        for attr in ("norm", "activation"):
            sub = getattr(child, attr, None)
            if isinstance(sub, nn.Module):
                order.append(sub)
    return order


def test_seph_mask_head_is_registered():
    registered = ROI_MASK_HEAD_REGISTRY.get("SephMaskRCNNConvUpsampleHead")
    assert registered is SephMaskRCNNConvUpsampleHead


def test_without_norm_equals_detectron2_head():
    upstream = MaskRCNNConvUpsampleHead(SHAPE, num_classes=3, conv_dims=[16, 16, 16])
    seph = SephMaskRCNNConvUpsampleHead(SHAPE, num_classes=3, conv_dims=[16, 16, 16])
    assert [n for n, _ in seph.named_children()] == [n for n, _ in upstream.named_children()]
    seph.load_state_dict(upstream.state_dict(), strict=True)
    x = torch.randn(4, 8, 7, 7)
    assert torch.equal(seph.layers(x), upstream.layers(x))


def test_evonorm_head_shapes_and_no_relu_anywhere():
    head = SephMaskRCNNConvUpsampleHead(
        SHAPE, num_classes=3, conv_dims=[16] * 5, conv_norm="EvoNormS0", norm_groups=4
    )
    names = [n for n, _ in head.named_children()]
    assert names == [f"mask_fcn{i}" for i in range(1, 5)] + ["deconv", "deconv_norm", "predictor"]
    order = _execution_order(head)
    evonorms = [i for i, m in enumerate(order) if isinstance(m, EvoNormS0)]
    assert len(evonorms) == 5  # four convs and the deconv
    for i in evonorms:
        assert not isinstance(order[i + 1], nn.ReLU), f"ReLU after EvoNorm at position {i}"
    assert not any(isinstance(m, nn.ReLU) for m in head.modules())
    # Normalised layers carry no bias; the predictor keeps its bias.
    assert all(head[i].bias is None for i in range(4)) and head.deconv.bias is None
    assert head.predictor.bias is not None
    out = head.layers(torch.randn(4, 8, 7, 7))
    assert out.shape == (4, 3, 14, 14)
    assert head.layers(torch.zeros(0, 8, 7, 7)).shape == (0, 3, 14, 14)


def test_evonorm_head_matches_hand_computation():
    head = SephMaskRCNNConvUpsampleHead(
        SHAPE, num_classes=2, conv_dims=[8, 8], conv_norm="EvoNormS0", norm_groups=2
    )
    x = torch.randn(3, 8, 7, 7)
    conv = head.mask_fcn1
    h = conv.norm(F.conv2d(x, conv.weight, padding=1))
    h = head.deconv_norm(F.conv_transpose2d(h, head.deconv.weight, stride=2))
    expected = F.conv2d(h, head.predictor.weight, head.predictor.bias)
    torch.testing.assert_close(head.layers(x), expected)


def test_gn_head_normalises_the_deconv_and_keeps_relus():
    head = SephMaskRCNNConvUpsampleHead(SHAPE, num_classes=3, conv_dims=[32, 32], conv_norm="GN")
    order = _execution_order(head)
    kinds = [type(m).__name__ for m in order]
    assert kinds[-4:] == ["ConvTranspose2d", "GroupNorm", "ReLU", "Conv2d"]
    assert isinstance(head.mask_fcn1.norm, nn.GroupNorm)
    assert isinstance(head.mask_fcn1.activation, nn.ReLU)
    assert head.layers(torch.randn(2, 8, 7, 7)).shape == (2, 3, 14, 14)


def test_empty_conv_dims_raise():
    with pytest.raises(ValueError, match="conv_dims"):
        SephMaskRCNNConvUpsampleHead(SHAPE, num_classes=3, conv_dims=[])


#: A small mask head with EvoNormS0 (the keys each mask-head test starts from).
MASK_KEYS = {
    "MODEL.MASK_ON": True,
    "MODEL.ROI_HEADS.NUM_CLASSES": 3,
    "MODEL.ROI_MASK_HEAD.NAME": "SephMaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 2,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 16,
    "MODEL.ROI_MASK_HEAD.NORM": "EvoNormS0",
    "MODEL.SEPH.EVONORM.GROUPS": 4,
    "MODEL.SEPH.EVONORM.EPS": 1e-4,
}


def test_from_config_reads_the_mask_keys_and_evonorm_parameters(sephnet_cfg):
    head = build_mask_head(sephnet_cfg(MASK_KEYS), SHAPE)
    assert isinstance(head, SephMaskRCNNConvUpsampleHead)
    norms = [m for m in head.modules() if isinstance(m, EvoNormS0)]
    assert len(norms) == 3 and all((n.groups, n.eps) == (4, 1e-4) for n in norms)
    assert head.predictor.out_channels == 3
    cfg = sephnet_cfg(MASK_KEYS)
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    assert build_mask_head(cfg, SHAPE).predictor.out_channels == 1


def _instances(training):
    boxes = Boxes(torch.tensor([[2.0, 2.0, 20.0, 20.0], [10.0, 5.0, 30.0, 25.0]]))
    inst = Instances((32, 32))
    if training:
        masks = torch.zeros(2, 32, 32, dtype=torch.bool)
        masks[0, 4:16, 4:16] = True
        masks[1, 8:20, 12:28] = True
        inst.proposal_boxes = boxes
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_masks = BitMasks(masks)
    else:
        inst.pred_boxes = boxes
        inst.pred_classes = torch.tensor([1, 2])
    return inst


def test_training_loss_and_inference_masks(sephnet_cfg):
    head = build_mask_head(sephnet_cfg(MASK_KEYS), SHAPE)
    x = torch.randn(2, 8, 7, 7, requires_grad=True)
    with EventStorage():
        losses = head.train()(x, [_instances(training=True)])
    assert set(losses) == {"loss_mask"} and torch.isfinite(losses["loss_mask"])
    losses["loss_mask"].backward()
    assert x.grad.abs().sum() > 0
    (out,) = head.eval()(x.detach(), [_instances(training=False)])
    assert out.pred_masks.shape == (2, 1, 14, 14)
    assert ((out.pred_masks >= 0) & (out.pred_masks <= 1)).all()
