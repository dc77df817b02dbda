"""PAFPN, ASFF, NAS-FPN and SPP: the computations by hand on small maps."""
import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec
from sephnet.modeling.backbone.asff import ASFF
from sephnet.modeling.backbone.hooks.spp import SPPBackboneHook
from sephnet.modeling.backbone.nas_fpn import NASFPN, MergingCell
from sephnet.modeling.backbone.pafpn import PAFPN

SHAPES = {f"res{l}": ShapeSpec(channels=4 * l, stride=2**l) for l in (3, 4, 5)}
IN = ["res3", "res4", "res5"]


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"res{l}": torch.randn(2, 4 * l, 64 // 2**l, 64 // 2**l, generator=g) for l in (3, 4, 5)}


def test_pafpn_bottom_up_path_by_hand():
    torch.manual_seed(0)
    neck = PAFPN(input_shapes=SHAPES, in_features=IN, out_channels=8)
    feats = _features()
    out = neck(feats)
    assert list(out) == ["p3", "p4", "p5"] and neck.output_shape()["p5"] == ShapeSpec(channels=8, stride=32)
    p = neck.top_down([feats[f] for f in IN])
    n3 = p[0]
    n4 = neck.fuse[0](neck.down[0](n3) + p[1])  # each conv carries its ReLU
    n5 = neck.fuse[1](neck.down[1](n4) + p[2])
    for got, want in zip(out.values(), (n3, n4, n5)):
        torch.testing.assert_close(got, want)
    assert neck.size_divisibility == 32


def test_pafpn_refuses_inputs_whose_strides_do_not_double():
    shapes = dict(SHAPES, res5=ShapeSpec(channels=20, stride=16))
    with pytest.raises(ValueError, match="doubling strides"):
        PAFPN(input_shapes=shapes, in_features=IN, out_channels=8)


def test_asff_weights_are_a_softmax_and_a_one_hot_weight_gives_the_plain_level():
    torch.manual_seed(0)
    neck = ASFF(input_shapes=SHAPES, in_features=IN, out_channels=8, weight_channels=4)
    feats = _features(1)
    pyramid = neck.top_down([feats[f] for f in IN])
    resized = [neck.resize[1]["0"](pyramid[0]), pyramid[1], F.interpolate(pyramid[2], scale_factor=2.0)]
    alpha = neck.fusion_weights(1, resized)
    assert alpha.shape == (2, 3, 4, 4)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(2, 4, 4))
    # Zero logit weights and a large bias on the level itself: the fusion keeps P_t alone.
    with torch.no_grad():
        for t, conv in enumerate(neck.weight_logits):
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor([50.0 if s == t else 0.0 for s in range(3)]))
    out = neck(feats)
    for t, name in enumerate(["p3", "p4", "p5"]):
        torch.testing.assert_close(out[name], neck.output[t](pyramid[t]), rtol=1e-5, atol=1e-5)


def _identity_cell(op):
    cell = MergingCell(op, 1)
    with torch.no_grad():
        cell.conv.weight.zero_()
        cell.conv.weight[0, 0, 1, 1] = 1.0
        cell.conv.bias.zero_()
    return cell


def test_merging_cells_by_hand():
    a = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])  # 2x2, resized by nearest to 4x4
    b = torch.full((1, 1, 4, 4), 0.5)
    b[0, 0, 0, 0] = -3.5  # mean of b = (15 * 0.5 - 3.5) / 16 = 0.25
    up = a.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(_identity_cell("sum")(a, b, (4, 4)), F.relu(up + b))
    gate = torch.sigmoid(torch.tensor(0.25))
    torch.testing.assert_close(_identity_cell("gp")(a, b, (4, 4)), F.relu(b + up * gate))
    # Downsizing is a max-pool by the size ratio: b (4x4) to 2x2 keeps each 2x2 block's max.
    pooled = _identity_cell("sum")(b, torch.zeros(1, 1, 2, 2), (2, 2))
    torch.testing.assert_close(pooled, torch.full((1, 1, 2, 2), 0.5))


def test_nas_fpn_stacks_keep_the_pyramid_shapes():
    shapes = {f"res{l}": ShapeSpec(channels=8, stride=2**l) for l in range(3, 8)}
    neck = NASFPN(input_shapes=shapes, in_features=list(shapes), out_channels=8, num_stacks=2)
    feats = {f"res{l}": torch.randn(1, 8, 128 // 2**l, 128 // 2**l) for l in range(3, 8)}
    out = neck(feats)
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert len(neck.stacks) == 2 and len(neck.stacks[0]) == 9
    with pytest.raises(ValueError, match="5 input levels"):
        NASFPN(input_shapes=SHAPES, in_features=IN, out_channels=8)


def test_spp_pools_by_hand():
    hook = SPPBackboneHook(input_shapes={"res4": ShapeSpec(channels=1, stride=16), "res5": ShapeSpec(channels=1, stride=32)})
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    pooled = hook.pool(x)
    assert pooled.shape == (1, 4, 16, 16)
    # A single peak spreads over the k x k window of each stride-1 max-pool.
    assert pooled.sum(dim=(2, 3)).flatten().tolist() == [1.0, 25.0, 81.0, 169.0]
    out = hook({"res4": torch.ones(1, 1, 8, 8), "res5": x})
    assert torch.equal(out["res4"], torch.ones(1, 1, 8, 8)) and out["res5"].shape == x.shape
    with pytest.raises(ValueError, match="odd"):
        SPPBackboneHook(input_shapes={"res5": ShapeSpec(channels=1, stride=32)}, pool_sizes=(4,))
