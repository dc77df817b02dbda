"""Context-attention heads (V5/V6/V7): declared output shapes, the gamma residual around the
value crop, the border strips and channel gate by value, config build + backward, errors."""
import pytest
import torch

from sephnet.backend import ShapeSpec
from sephnet.config import validate_sephnet_config
from sephnet.layers.evonorm import EvoNormS0
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.context_attention_heads import (
    BoxQueryAttentionHead,
    ContextQueryAttentionHead,
    ContextStripAttentionHead,
    border_strips,
)
from sephnet.modeling.roi_heads.decoupled_features import ContextPair, DecoupledFeatures

C, S = 16, 7
SHAPE = ShapeSpec(channels=C, height=S, width=S)
CONTEXT_HEADS = sorted(
    name
    for name, head in SEPH_BOX_HEAD_REGISTRY
    if getattr(head, "input_kind", "") == "context_pair"
)
RESOLUTION = {"BoxQueryAttentionHead": 7, "ContextQueryAttentionHead": 7,
              "ContextStripAttentionHead": 13}


def tiny_cfg(sephnet_cfg, name, iou=False, norm=""):
    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = S
    cfg.MODEL.ROI_BOX_HEAD.NORM = norm
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    node = cfg.MODEL.SEPH.BOX_HEAD
    node.NAME, node.NUM_CONV, node.CONV_DIM, node.NUM_FC, node.FC_DIM = name, 2, 16, 2, 32
    node.IOU_NUM_CONV, node.IOU_NUM_FC = 1, 0
    cfg.MODEL.SEPH.IOU_BRANCH.ENABLED = iou
    pooler = cfg.MODEL.SEPH.MULTISCALE_POOLER
    pooler.ENABLED = True
    pooler.CONTEXT_RESOLUTION = RESOLUTION[name]
    pooler.CONTEXT_SCALE = 1.5 if RESOLUTION[name] == 7 else 13 / 7
    validate_sephnet_config(cfg)
    return cfg


def pair(r, m, requires_grad=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(r + m)
    box = torch.randn(r, C, S, S, generator=g, dtype=dtype).requires_grad_(requires_grad)
    ctx = torch.randn(r, C, m, m, generator=g, dtype=dtype).requires_grad_(requires_grad)
    return ContextPair(box, ctx)


def shape_of(spec, r):
    if spec.height is None:
        return (r, spec.channels)
    return (r, spec.channels, spec.height, spec.width)


def test_the_three_log_heads_are_registered():
    assert CONTEXT_HEADS == [
        "BoxQueryAttentionHead", "ContextQueryAttentionHead", "ContextStripAttentionHead"
    ]


@pytest.mark.parametrize("norm", ["", "EvoNormS0"])
@pytest.mark.parametrize("iou", [False, True])
@pytest.mark.parametrize("name", CONTEXT_HEADS)
def test_outputs_match_declared_shapes_and_backpropagate(name, iou, norm, sephnet_cfg):
    cfg = tiny_cfg(sephnet_cfg, name, iou, norm)
    head = SEPH_BOX_HEAD_REGISTRY.get(name)(cfg, SHAPE)
    shapes = head.output_shapes
    assert ("iou" in shapes) == iou
    with torch.no_grad():  # gamma starts at 0 (no gradient to the query crop); move it
        for p in head.parameters():
            if p.dim() == 0:
                p.fill_(0.5)
    x = pair(5, RESOLUTION[name], requires_grad=True)
    out = head(x)
    assert isinstance(out, DecoupledFeatures)
    for field in ("cls", "box", "iou"):
        value = getattr(out, field)
        if field in shapes:
            assert value.shape == shape_of(shapes[field], 5)
        else:
            assert value is None
    sum((t ** 2).sum() for t in out if t is not None).backward()
    assert x.box.grad.abs().sum() > 0 and x.context.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    empty = head(pair(0, RESOLUTION[name]))
    assert all(t.shape[0] == 0 for t in empty if t is not None)
    if norm:
        assert any(isinstance(m, EvoNormS0) for m in head.modules())


@pytest.mark.parametrize("cls,query_is_box", [(BoxQueryAttentionHead, True),
                                              (ContextQueryAttentionHead, False)])
def test_query_heads_add_gamma_attention_to_the_value_crop(cls, query_is_box):
    torch.manual_seed(0)
    kwargs = dict(num_fc=1, fc_dim=8, num_conv=1, conv_dim=8, norm="", norm_groups=4,
                  norm_eps=1e-5)
    head = cls(input_shape=SHAPE, context_resolution=S, head_kwargs=kwargs)
    x0, x1 = pair(3, S)
    q, v = (x0, x1) if query_is_box else (x1, x0)
    inner = head.head
    # gamma = 0 at init: box_in = relu(V), cls_in = box crop
    out = head(ContextPair(x0, x1))
    torch.testing.assert_close(out.cls, inner.cls_tower(x0))
    torch.testing.assert_close(out.box, inner.box_tower(torch.relu(v)))
    with torch.no_grad():
        head.gamma.fill_(0.7)
    out = head(ContextPair(x0, x1))
    box_in = torch.relu(v + 0.7 * head.attention(q, v))
    torch.testing.assert_close(out.box, inner.box_tower(box_in))
    torch.testing.assert_close(out.cls, inner.cls_tower(x0))


def test_query_head_iou_conv_reads_the_second_to_last_box_conv():
    torch.manual_seed(1)
    kwargs = dict(num_fc=1, fc_dim=8, num_conv=3, conv_dim=8, norm="", norm_groups=4,
                  norm_eps=1e-5)
    head = BoxQueryAttentionHead(input_shape=SHAPE, context_resolution=S, head_kwargs=kwargs,
                                 iou_tower=True)
    x0, x1 = pair(2, S)
    out = head(ContextPair(x0, x1))
    box_in = torch.relu(x1)  # gamma = 0
    tower = head.head.box_tower
    penultimate = tower.conv2(tower.conv1(box_in))
    torch.testing.assert_close(out.iou, head.iou_conv(penultimate))
    torch.testing.assert_close(out.box, tower.conv3(penultimate))
    assert head.output_shapes["iou"] == ShapeSpec(channels=8, height=S, width=S)


def test_border_strips_geometry():
    ctx = torch.arange(13 * 13.0).reshape(1, 1, 13, 13)
    top, right, bottom, left = border_strips(ctx, 7)
    grid = ctx[0, 0]
    assert top.shape == bottom.shape == (1, 1, 3, 7) and left.shape == right.shape == (1, 1, 7, 3)
    # row r, col c holds 13 r + c
    assert top[0, 0].tolist() == [[13 * r + c for c in range(3, 10)] for r in range(0, 3)]
    assert right[0, 0].tolist() == [[13 * r + c for c in range(10, 13)] for r in range(3, 10)]
    assert bottom[0, 0].tolist() == [[13 * r + c for c in range(3, 10)] for r in range(10, 13)]
    assert left[0, 0].tolist() == [[13 * r + c for c in range(0, 3)] for r in range(3, 10)]
    # corners and the centre are in no strip
    used = torch.cat([t.flatten() for t in (top, right, bottom, left)]).tolist()
    assert len(used) == 84 and grid[0, 0].item() not in used and grid[6, 6].item() not in used


def test_strip_head_gate_by_hand():
    torch.manual_seed(2)
    kwargs = dict(num_fc=1, fc_dim=8, num_conv=1, conv_dim=8, norm="", norm_groups=4,
                  norm_eps=1e-5, iou_tower=False)
    head = ContextStripAttentionHead(input_shape=SHAPE, context_resolution=13, head_kwargs=kwargs)
    assert all(a.query.out_channels == C // 2 and a.value.out_channels == C // 2
               for a in head.attentions)
    x0, x1 = pair(3, 13)
    strips = border_strips(x1, S)
    a = [torch.relu(att(x0, st)) for att, st in zip(head.attentions, strips)]  # norm "", ReLU
    pooled = torch.cat([t.mean(dim=(2, 3)) for t in a], dim=1)  # [R, 4C]
    hidden = torch.relu(pooled @ head.squeeze.weight.T + head.squeeze.bias)
    alpha = torch.sigmoid(hidden @ head.excite.weight.T + head.excite.bias)
    torch.testing.assert_close(head.gate(ContextPair(x0, x1)), alpha)
    out = head(ContextPair(x0, x1))
    expected = head.head(x0 * alpha[:, :, None, None])
    torch.testing.assert_close(out.cls, expected.cls)
    torch.testing.assert_close(out.box, expected.box)
    # the gate depends on the border only: changing corners or centre of x1 changes nothing
    x1b = x1.clone()
    x1b[:, :, :3, :3] += 5
    x1b[:, :, 3:10, 3:10] += 5
    torch.testing.assert_close(head.gate(ContextPair(x0, x1b)), alpha)


@pytest.mark.parametrize("cls,m", [(BoxQueryAttentionHead, 13), (ContextQueryAttentionHead, 9),
                                   (ContextStripAttentionHead, 7),
                                   (ContextStripAttentionHead, 12)])
def test_crop_sizes_that_do_not_type_check_are_rejected(cls, m):
    kwargs = dict(num_fc=1, fc_dim=8, num_conv=1, conv_dim=8, norm="")
    with pytest.raises(ValueError, match="context crop"):
        cls(input_shape=SHAPE, context_resolution=m, head_kwargs=kwargs)


@pytest.mark.parametrize("name", CONTEXT_HEADS)
def test_a_single_map_is_rejected(name, sephnet_cfg):
    head = SEPH_BOX_HEAD_REGISTRY.get(name)(tiny_cfg(sephnet_cfg, name), SHAPE)
    with pytest.raises(TypeError, match="ContextPair"):
        head(torch.zeros(1, C, S, S))
