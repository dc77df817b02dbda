"""Norm lookup by config name: every backend name, EvoNormS0, and the errors."""
import pytest
import torch
from torch import nn

from sephnet import backend
from sephnet.backend import FrozenBatchNorm2d, NaiveSyncBatchNorm
from sephnet.layers.evonorm import EvoNormS0
from sephnet.layers.norm import (
    get_norm,
    is_sephnet_norm,
    norm_includes_activation,
    resolve_norm,
    valid_norm_names,
)

# Names detectron2 v0.6's get_norm builds, and the layer class each gives.
UPSTREAM = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": nn.GroupNorm,
    "nnSyncBN": nn.SyncBatchNorm,
    "naiveSyncBN": NaiveSyncBatchNorm,
    "naiveSyncBN_N": NaiveSyncBatchNorm,
}


def test_valid_names_are_backend_names_plus_evonorm():
    names = valid_norm_names()
    assert names[0] == ""
    assert set(UPSTREAM) <= set(names)
    assert "EvoNormS0" in names
    # The portable core also has detectron2's later "LN"; v0.6 does not.
    assert ("LN" in names) == (backend.BACKEND == "core")
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name,cls", sorted(UPSTREAM.items()))
def test_backend_names_pass_through_unchanged_and_build_their_layer(name, cls):
    assert resolve_norm(name) == name
    layer = get_norm(name, 32)
    assert isinstance(layer, cls)
    assert not is_sephnet_norm(name)
    assert norm_includes_activation(name) is False


def test_every_valid_name_builds_a_layer_for_32_channels():
    for name in valid_norm_names():
        layer = get_norm(name, 32)
        if name == "":
            assert layer is None
        else:
            assert isinstance(layer, nn.Module), name
            assert sum(p.numel() for p in layer.parameters()) + sum(
                b.numel() for b in layer.buffers()
            ) > 0, name


def test_empty_name_means_no_norm():
    assert resolve_norm("") == ""
    assert get_norm("", 8) is None
    assert norm_includes_activation("") is False


def test_evonorm_name_resolves_to_a_factory_with_groups_and_eps():
    factory = resolve_norm("EvoNormS0", groups=4, eps=1e-3)
    assert callable(factory) and not isinstance(factory, str)
    layer = factory(8)
    assert isinstance(layer, EvoNormS0)
    assert (layer.num_channels, layer.groups, layer.eps) == (8, 4, 1e-3)
    default = get_norm("EvoNormS0", 64)
    assert (default.groups, default.eps) == (32, 1e-5)
    assert is_sephnet_norm("EvoNormS0")


def test_backend_get_norm_accepts_the_resolved_factory_but_not_the_raw_name():
    layer = backend.get_norm(resolve_norm("EvoNormS0", groups=2), 8)
    assert isinstance(layer, EvoNormS0) and layer.groups == 2
    # sephnet never adds its names to detectron2's get_norm table.
    with pytest.raises(KeyError):
        backend.get_norm("EvoNormS0", 32)


def test_only_sephnet_norms_include_activation():
    flags = {name: norm_includes_activation(name) for name in valid_norm_names()}
    assert [name for name, flag in flags.items() if flag] == ["EvoNormS0", "FRN"]


@pytest.mark.parametrize("fn", [resolve_norm, norm_includes_activation, lambda n: get_norm(n, 32)])
def test_unknown_name_raises_value_error_listing_the_choices(fn):
    with pytest.raises(ValueError) as info:
        fn("EvoNorm")
    message = str(info.value)
    assert "'EvoNorm'" in message
    for name in ("GN", "FrozenBN", "EvoNormS0"):
        assert repr(name) in message


def test_non_string_name_raises_type_error():
    with pytest.raises(TypeError, match="must be a str"):
        resolve_norm(nn.BatchNorm2d)


def test_groups_that_do_not_divide_channels_surface_from_the_factory():
    with pytest.raises(ValueError, match="groups=32"):
        get_norm("EvoNormS0", 48)
    assert isinstance(get_norm("EvoNormS0", 48, groups=16), EvoNormS0)


def test_resolved_evonorm_runs_on_a_feature_map():
    layer = get_norm("EvoNormS0", 32)
    x = torch.randn(2, 32, 4, 4)
    assert layer(x).shape == x.shape
