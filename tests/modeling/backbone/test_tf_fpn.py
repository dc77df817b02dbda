"""TFStyleFPN on stub bottom-up maps: declared shapes, fuse types by value, top level from C5."""
import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec
from sephnet.modeling.backbone.tf_fpn import FUSE_TYPES, TFStyleFPN

from .hooks.conftest import check_declared, make_features

BOTTOM_UP = {f"res{l}": ShapeSpec(channels=4 * l, stride=2**l) for l in (2, 3, 4, 5)}


def _fpn(**kwargs):
    args = dict(input_shapes=BOTTOM_UP, in_features=["res3", "res4", "res5"], out_channels=8)
    args.update(kwargs)
    return TFStyleFPN(**args)


@pytest.mark.parametrize(
    "in_features,top,keys",
    [
        (["res2", "res3", "res4", "res5"], 1, ["p2", "p3", "p4", "p5", "p6"]),  # "P2 output"
        (["res3", "res4", "res5"], 1, ["p3", "p4", "p5", "p6"]),  # "P3 output", sephv14
        (["res3", "res4", "res5"], 0, ["p3", "p4", "p5"]),
        (["res4", "res5"], 2, ["p4", "p5", "p6", "p7"]),
    ],
)
@pytest.mark.parametrize("fuse", FUSE_TYPES)
def test_outputs_match_declared_shapes_for_level_selections(in_features, top, keys, fuse):
    fpn = _fpn(in_features=in_features, num_top_levels=top, fuse_type=fuse,
               mix_fusion_channels=3, norm="EvoNormS0", norm_groups=4)
    shapes = fpn.output_shape()
    assert list(shapes) == keys
    assert all(s.stride == 2 ** int(k[1:]) and s.channels == 8 for k, s in shapes.items())
    feats = make_features(BOTTOM_UP)
    out = fpn(feats)
    check_declared(out, shapes)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in fpn.parameters())
    assert fpn.size_divisibility == max(s.stride for s in shapes.values())


def _hand_two_level(fpn, feats, fuse):
    lat4 = fpn.laterals["res4"](feats["res4"])
    lat3 = fpn.laterals["res3"](feats["res3"])
    td = lat4.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest 2x
    if fuse == "sum":
        fused = td + lat3
    elif fuse == "avg":
        fused = (td + lat3) / 2
    elif fuse == "concat":
        fused = torch.cat([td, lat3], 1)
    elif fuse == "mix_fusion":
        fused = torch.cat([lat3[:, :3], td[:, 3:] + lat3[:, 3:]], 1)
    else:
        w = torch.relu(fpn.fusions["res3"].weight)
        fused = (w[0] * td + w[1] * lat3) / (w.sum() + 1e-4)
    out3 = fpn.outputs["res3"]
    out4 = fpn.outputs["res4"]
    return {
        "p3": F.conv2d(fused, out3.weight, out3.bias, padding=1),
        "p4": F.conv2d(lat4, out4.weight, out4.bias, padding=1),
    }


@pytest.mark.parametrize("fuse", FUSE_TYPES)
def test_fuse_types_by_hand(fuse):
    fpn = _fpn(in_features=["res3", "res4"], num_top_levels=0, fuse_type=fuse,
               mix_fusion_channels=3)
    if fuse == "wsum":
        with torch.no_grad():
            fpn.fusions["res3"].weight.copy_(torch.tensor([2.0, -1.0]))  # relu drops the second
    feats = make_features(BOTTOM_UP)
    out = fpn(feats)
    expected = _hand_two_level(fpn, feats, fuse)
    for k in expected:
        torch.testing.assert_close(out[k], expected[k])
    if fuse == "concat":
        assert fpn.outputs["res3"].in_channels == 16


def test_laterals_have_bias_and_no_norm_and_top_level_reads_raw_c5():
    fpn = _fpn(norm="EvoNormS0", norm_groups=4)
    assert all(lat.bias is not None for lat in fpn.laterals.values())
    assert all(getattr(lat, "norm", None) is None for lat in fpn.laterals.values())
    feats = make_features(BOTTOM_UP)
    out = fpn(feats)
    torch.testing.assert_close(out["p6"], fpn.top_block(feats["res5"])[0])
    feats2 = dict(feats, res3=torch.zeros_like(feats["res3"]))
    assert torch.equal(fpn(feats2)["p6"], out["p6"])


def test_top_down_resizes_to_odd_lateral_sizes():
    fpn = _fpn(in_features=["res3", "res4"], num_top_levels=0)
    feats = {"res3": torch.randn(1, 12, 5, 7), "res4": torch.randn(1, 16, 3, 4)}
    assert fpn(feats)["p3"].shape == (1, 8, 5, 7)


def test_bad_arguments_raise_with_values():
    with pytest.raises(ValueError, match="fuse_type='max'"):
        _fpn(fuse_type="max")
    with pytest.raises(ValueError, match="res6"):
        _fpn(in_features=["res5", "res6"])
    with pytest.raises(ValueError, match="strides"):
        _fpn(in_features=["res3", "res5"])
    with pytest.raises(ValueError, match="mix_fusion_channels=8"):
        _fpn(fuse_type="mix_fusion", mix_fusion_channels=8)
