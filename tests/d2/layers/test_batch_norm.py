"""FrozenBatchNorm2d, get_norm, NaiveSyncBatchNorm and LayerNorm."""
import copy

import pytest
import torch
from torch import nn

from sephnet.d2.layers import FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm, get_norm


def _bn_with_stats(channels: int = 4) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-2.0, 2.0)
        bn.running_var.uniform_(0.5, 3.0)
    return bn.eval()


def test_frozen_bn_buffers_and_identity_init():
    frozen = FrozenBatchNorm2d(3)
    assert set(dict(frozen.named_buffers())) == {"weight", "bias", "running_mean", "running_var"}
    assert list(frozen.parameters()) == []
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(frozen(x), x)
    assert repr(frozen) == "FrozenBatchNorm2d(num_features=3, eps=1e-05)"


@pytest.mark.parametrize("requires_grad", [False, True])
def test_frozen_bn_equals_eval_batchnorm(requires_grad):
    bn = _bn_with_stats()
    frozen = FrozenBatchNorm2d(4, eps=1e-3)
    frozen.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"})
    x = torch.randn(2, 4, 5, 3, requires_grad=requires_grad)
    expected = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-3)
    expected = expected * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(frozen(x), expected.detach() if not requires_grad else expected)
    torch.testing.assert_close(frozen(x), bn(x))
    if requires_grad:
        frozen(x).sum().backward()
        assert x.grad is not None and frozen.weight.grad is None


def test_frozen_bn_loads_caffe2_state_dict_without_statistics():
    frozen = FrozenBatchNorm2d(2)
    state = {"weight": torch.tensor([2.0, 3.0]), "bias": torch.tensor([1.0, -1.0])}
    state = nn.Module.state_dict(frozen).__class__(state)
    state._metadata = {"": {"version": 1}}
    result = frozen.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(frozen.running_mean, torch.zeros(2)) and torch.equal(frozen.running_var, torch.ones(2))
    x = torch.ones(1, 2, 1, 1)
    torch.testing.assert_close(frozen(x).flatten(), torch.tensor([2.0, 3.0]) / (1 + 1e-5) ** 0.5 + torch.tensor([1.0, -1.0]))
    # A plain dict has no version either: treated as old, statistics filled in.
    assert FrozenBatchNorm2d(2).load_state_dict({"weight": torch.ones(2), "bias": torch.zeros(2)}).missing_keys == []
    # A state dict saved by the current version must carry the statistics.
    modern = state.__class__({"weight": torch.ones(2), "bias": torch.zeros(2)})
    modern._metadata = {"": {"version": 3}}
    with pytest.raises(RuntimeError, match="running_mean"):
        FrozenBatchNorm2d(2).load_state_dict(modern)


def test_convert_frozen_batchnorm_preserves_outputs_and_replaces_modules():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _bn_with_stats(), nn.ReLU(), nn.Sequential(_bn_with_stats()))
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(copy.deepcopy(model))
    assert isinstance(converted[1], FrozenBatchNorm2d) and isinstance(converted[3][0], FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    assert converted[1].eps == 1e-3
    torch.testing.assert_close(converted(x), expected)
    single = FrozenBatchNorm2d.convert_frozen_batchnorm(_bn_with_stats())
    assert isinstance(single, FrozenBatchNorm2d)
    # Same state_dict keys as a model built with FrozenBN directly (minus BN's counter).
    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(converted.state_dict()) == keys


@pytest.mark.parametrize(
    "name,expected_type",
    [
        ("BN", nn.BatchNorm2d),
        ("SyncBN", nn.SyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
        ("GN", nn.GroupNorm),
        ("nnSyncBN", nn.SyncBatchNorm),
        ("naiveSyncBN", NaiveSyncBatchNorm),
        ("naiveSyncBN_N", NaiveSyncBatchNorm),
        ("LN", LayerNorm),
    ],
)
def test_get_norm_names(name, expected_type):
    module = get_norm(name, 64)
    assert type(module) is expected_type
    if name == "GN":
        assert module.num_groups == 32 and module.num_channels == 64
    if name == "naiveSyncBN_N":
        assert module._stats_mode == "N"


def test_get_norm_empty_callable_and_errors():
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    assert isinstance(get_norm(lambda c: nn.GroupNorm(2, c), 8), nn.GroupNorm)
    with pytest.raises(KeyError, match="FrozenBN") as info:
        get_norm("BatchNorm", 8)
    assert "BatchNorm" in str(info.value)
    with pytest.raises(TypeError, match="str or a callable"):
        get_norm(3, 8)


def test_naive_sync_bn_is_plain_bn_in_a_single_process():
    torch.manual_seed(1)
    naive, plain = NaiveSyncBatchNorm(3), nn.BatchNorm2d(3)
    plain.load_state_dict(naive.state_dict())
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(naive.train()(x), plain.train()(x))
    torch.testing.assert_close(naive.running_mean, plain.running_mean)
    torch.testing.assert_close(naive.eval()(x), plain.eval()(x))
    with pytest.raises(ValueError, match="stats_mode"):
        NaiveSyncBatchNorm(3, stats_mode="M")


def test_layer_norm_normalises_over_channels():
    ln = LayerNorm(4)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        ln.bias.copy_(torch.tensor([0.0, 1.0, 0.0, -1.0]))
    x = torch.randn(2, 4, 3, 3)
    expected = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (4,), ln.weight, ln.bias, eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected)


def test_cycle_batch_norm_list_keeps_statistics_per_call_and_shares_affine():
    from sephnet.d2.layers import CycleBatchNormList

    norm = CycleBatchNormList(length=2, num_features=3, momentum=1.0)
    assert set(norm.state_dict()) >= {"weight", "bias", "0.running_mean", "1.running_mean"}
    a = torch.full((2, 3, 2, 2), 1.0) + torch.arange(2.0).view(2, 1, 1, 1)  # mean 1.5
    b = torch.full((2, 3, 2, 2), 5.0) + torch.arange(2.0).view(2, 1, 1, 1)  # mean 5.5
    with torch.no_grad():
        norm.weight.fill_(2.0)
        norm.bias.fill_(1.0)
    out_a, out_b = norm(a), norm(b)
    torch.testing.assert_close(norm[0].running_mean, torch.full((3,), 1.5))
    torch.testing.assert_close(norm[1].running_mean, torch.full((3,), 5.5))
    # Both batches normalise to +-1 (up to eps), then the shared affine gives 1 +- 2.
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(out_a[:, 0, 0, 0], torch.tensor([-1.0, 3.0]), rtol=1e-3, atol=1e-3)
