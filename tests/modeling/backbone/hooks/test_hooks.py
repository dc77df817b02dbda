"""Backbone hooks on stub pyramids: declared shapes, values by hand, identities, errors."""
import pytest
import torch
from torch.nn import functional as F

from sephnet.backend import ShapeSpec
from sephnet.modeling.backbone.hooks import (
    BALANCE_VERSIONS,
    FUSION_VERSIONS,
    NON_LOCAL_VERSIONS,
    BalanceBackboneHook,
    FusionBackboneHook,
    NonLocalBackboneHook,
    SEBackboneHook,
    build_backbone_hook,
    pyramid_level,
)
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY

from .conftest import IMAGE, check_declared, make_features, make_shapes

_VERSION_KEYS = {
    "NonLocalBackboneHook": ("NON_LOCAL", NON_LOCAL_VERSIONS),
    "FusionBackboneHook": ("FUSION", FUSION_VERSIONS),
    "BalanceBackboneHook": ("BALANCE", BALANCE_VERSIONS),
}


def _every_hook_and_version():
    cases = []
    for name, _ in sorted(SEPH_BACKBONE_HOOK_REGISTRY):
        node, versions = _VERSION_KEYS.get(name, (None, {None: None}))
        cases += [(name, node, v) for v in versions]
    return cases


@pytest.mark.parametrize("name,node,version", _every_hook_and_version())
@pytest.mark.parametrize("prefix", ["p", "res"])
def test_every_registered_hook_builds_runs_and_matches_its_declared_shapes(
    tiny_cfg, name, node, version, prefix
):
    if node is not None:
        tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS[node].VERSION = version
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.NORM = "GN" if version == "old" else "EvoNormS0"
    shapes = make_shapes(prefix, channels=32)
    bottom_up = make_shapes("res", levels=(2, 3, 4, 5), channels=8)
    hook = build_backbone_hook(
        tiny_cfg, name, "MODEL.SEPH.BACKBONE_HOOKS.AFTER",
        input_shapes=shapes, bottom_up_shapes=bottom_up,
    )
    feats = make_features(shapes)
    for t in feats.values():
        t.requires_grad_(True)
    out = hook(feats, make_features(bottom_up))
    check_declared(out, hook.output_shape())
    sum(o.square().sum() for o in out.values()).backward()
    assert all(t.grad is not None for t in feats.values())
    assert all(p.grad is not None for p in hook.parameters())


def test_unknown_hook_name_lists_registered_names(tiny_cfg):
    with pytest.raises(ValueError, match="MODEL.SEPH.BACKBONE_HOOKS.BEFORE='Nope'.*SEBackboneHook"):
        build_backbone_hook(tiny_cfg, "Nope", "MODEL.SEPH.BACKBONE_HOOKS.BEFORE",
                            input_shapes=make_shapes())
    assert build_backbone_hook(tiny_cfg, "", "X", input_shapes=make_shapes()) is None


def test_pyramid_level_parses_only_level_keys():
    assert [pyramid_level(k) for k in ("res4", "p6", "C3", "stem", "f3")] == [4, 6, 3, None, None]


def test_gamma_residual_non_local_hook_is_identity_at_init():
    shapes = make_shapes(channels=16)
    hook = NonLocalBackboneHook(input_shapes=shapes, multipliers=(8, 8, 2), weighted_residual=True)
    feats = make_features(shapes)
    out = hook(feats)
    for k in feats:
        assert torch.equal(out[k], feats[k])
    assert sorted(hook.blocks) == ["p4", "p5", "p6"]


def test_old_non_local_version_is_relu_groupnorm_of_the_input_at_init(tiny_cfg):
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.NON_LOCAL.VERSION = "old"
    shapes = make_shapes(channels=64)  # 2 channels per group: p6 (1x1) still has a variance
    hook = NonLocalBackboneHook(tiny_cfg, input_shapes=shapes)
    feats = make_features(shapes)
    out = hook(feats)
    assert torch.equal(out["p3"], feats["p3"])
    for k in ("p4", "p5", "p6"):
        torch.testing.assert_close(out[k], torch.relu(F.group_norm(feats[k], 32, eps=1e-5)))


def test_current_non_local_version_uses_full_width_plain_residual_and_norm(tiny_cfg):
    hook = NonLocalBackboneHook(tiny_cfg, input_shapes=make_shapes(channels=16))
    block = hook.blocks["p4"]
    assert block.query.out_channels == block.value.out_channels == 16
    assert block.gamma is None and type(block.norm).__name__ == "EvoNormS0" and not block.relu
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.NON_LOCAL.VERSION = "V2"
    block = NonLocalBackboneHook(tiny_cfg, input_shapes=make_shapes(channels=16)).blocks["p5"]
    assert (block.query.out_channels, block.num_heads) == (128, 2)


def test_se_hook_gates_levels_from_four_with_their_own_block():
    shapes = make_shapes("res", levels=(2, 3, 4, 5), channels=32)
    hook = SEBackboneHook(input_shapes=shapes)
    feats = make_features(shapes)
    out = hook(feats)
    assert torch.equal(out["res2"], feats["res2"]) and torch.equal(out["res3"], feats["res3"])
    se = hook.blocks["res5"]
    x = feats["res5"]
    gate = torch.sigmoid(se.excite(torch.relu(se.squeeze(x.mean((2, 3))))))
    torch.testing.assert_close(out["res5"], x * gate[:, :, None, None])
    assert se.squeeze.out_features == 2  # ratio 16


@pytest.mark.parametrize("version", sorted(FUSION_VERSIONS))
def test_fusion_hook_adds_f3_with_declared_channels_and_stride_by_value(tiny_cfg, version):
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.FUSION.VERSION = version
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.NORM = ""
    shapes = make_shapes(channels=8)
    hook = FusionBackboneHook(tiny_cfg, input_shapes=shapes)
    expected_channels = 16 if version == "V1" else 8
    assert hook.output_shape()["f3"] == ShapeSpec(channels=expected_channels, stride=8)
    feats = make_features(shapes)
    out = hook(feats)
    for k in shapes:
        assert torch.equal(out[k], feats[k])
    size = feats["p3"].shape[-2:]
    mean = sum(
        F.interpolate(feats[k], size=size, mode="bilinear", align_corners=False)
        for k in ("p4", "p5", "p6")
    ) / 3
    merged = feats["p3"] + mean if version == "V3" else torch.cat([feats["p3"], mean], 1)
    expected = F.conv2d(merged, hook.conv.weight, hook.conv.bias, padding=1)
    torch.testing.assert_close(out["f3"], expected)


def test_fusion_hook_names_the_finest_level_and_needs_two_levels():
    hook = FusionBackboneHook(input_shapes=make_shapes(levels=(2, 3)), out_channels=4)
    assert "f2" in hook.output_shape()
    with pytest.raises(ValueError, match=">= 2 pyramid levels"):
        FusionBackboneHook(input_shapes=make_shapes(levels=(3,)), out_channels=4)
    shapes = {"p3": ShapeSpec(channels=8, stride=8), "p4": ShapeSpec(channels=16, stride=16)}
    with pytest.raises(ValueError, match="equal channels"):
        FusionBackboneHook(input_shapes=shapes, out_channels=4)


def test_balance_hook_v1_adds_the_refined_reference_mean_by_value():
    shapes = make_shapes(channels=8)
    hook = BalanceBackboneHook(input_shapes=shapes, reference_index=1)
    feats = make_features(shapes)
    out = hook(feats)
    ref = feats["p4"].shape[-2:]

    def resize(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    mean = (resize(feats["p3"], ref) + feats["p4"] + resize(feats["p5"], ref)
            + resize(feats["p6"], ref)) / 4
    refined = F.conv2d(mean, hook.refine.weight, hook.refine.bias, padding=1)
    for k in shapes:
        expected = feats[k] + (refined if k == "p4" else resize(refined, feats[k].shape[-2:]))
        torch.testing.assert_close(out[k], expected)
    assert hook.output_shape() == shapes


def test_balance_hook_v2_doubles_channels_and_concats_projected_bottom_up(tiny_cfg):
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.BALANCE.VERSION = "V2"
    shapes = make_shapes(channels=8)
    bottom_shapes = make_shapes("res", levels=(2, 3, 4, 5), channels=4)
    hook = BalanceBackboneHook(tiny_cfg, input_shapes=shapes, bottom_up_shapes=bottom_shapes)
    assert {k: s.channels for k, s in hook.output_shape().items()} == {k: 16 for k in shapes}
    assert hook.sources == {"p3": "res3", "p4": "res4", "p5": "res5", "p6": "res5"}
    feats, bottom = make_features(shapes), make_features(bottom_shapes)
    out = hook(feats, bottom)
    check_declared(out, hook.output_shape())
    proj = hook.projections["p4"]
    torch.testing.assert_close(out["p4"][:, 8:], proj(bottom["res4"]))
    p6_src = F.interpolate(bottom["res5"], size=feats["p6"].shape[-2:], mode="nearest")
    torch.testing.assert_close(out["p6"][:, 8:], hook.projections["p6"](p6_src))
    with pytest.raises(ValueError, match="bottom-up maps"):
        BalanceBackboneHook(tiny_cfg, input_shapes=shapes, bottom_up_shapes=None)


def test_balance_reference_index_and_versions_are_checked(tiny_cfg):
    with pytest.raises(ValueError, match="reference_index=4"):
        BalanceBackboneHook(input_shapes=make_shapes(), reference_index=4)
    tiny_cfg.MODEL.SEPH.BACKBONE_HOOKS.BALANCE.VERSION = "V3"
    with pytest.raises(ValueError, match="BALANCE.VERSION='V3'.*RPN hook"):
        BalanceBackboneHook(tiny_cfg, input_shapes=make_shapes())


def test_non_pyramid_keys_pass_through_every_hook(tiny_cfg):
    shapes = dict(make_shapes(channels=32), stem=ShapeSpec(channels=4, stride=4))
    feats = make_features(shapes)
    for name in ("NonLocalBackboneHook", "SEBackboneHook", "BalanceBackboneHook",
                 "FusionBackboneHook"):
        hook = build_backbone_hook(tiny_cfg, name, "K", input_shapes=shapes)
        assert torch.equal(hook(feats)["stem"], feats["stem"])
        assert hook.output_shape()["stem"] == shapes["stem"]
