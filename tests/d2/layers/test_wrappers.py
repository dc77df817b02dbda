"""Conv2d with norm/activation, shape helpers and the empty-safe cross entropy."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.d2.layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    ShapeSpec,
    cat,
    cross_entropy,
    empty_input_loss_func_wrapper,
    get_norm,
    interpolate,
    move_device_like,
    nonzero_tuple,
    shapes_to_tensor,
)


def test_conv2d_applies_norm_then_activation_and_keeps_state_dict_keys():
    conv = Conv2d(3, 32, kernel_size=3, padding=1, bias=False, norm=get_norm("GN", 32), activation=F.relu)
    assert set(conv.state_dict()) == {"weight", "norm.weight", "norm.bias"}
    x = torch.randn(2, 3, 6, 5)
    expected = F.relu(conv.norm(F.conv2d(x, conv.weight, None, 1, 1)))
    torch.testing.assert_close(conv(x), expected)
    assert isinstance(conv, nn.Conv2d)


def test_conv2d_without_extras_is_nn_conv2d():
    torch.manual_seed(0)
    conv = Conv2d(2, 4, 3, stride=2)
    plain = nn.Conv2d(2, 4, 3, stride=2)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(1, 2, 9, 9)
    torch.testing.assert_close(conv(x), plain(x))
    assert conv.norm is None and conv.activation is None


def test_conv2d_empty_input_in_train_and_eval():
    conv = Conv2d(3, 4, 3, padding=1, norm=nn.BatchNorm2d(4), activation=F.relu)
    out = conv.eval()(torch.zeros(0, 3, 7, 7))
    assert out.shape == (0, 4, 7, 7)
    frozen = Conv2d(3, 4, 3, norm=get_norm("FrozenBN", 4))
    x = torch.zeros(0, 3, 5, 5, requires_grad=True)
    frozen.train()(x).sum().backward()
    assert x.grad.shape == x.shape
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        Conv2d(3, 4, 3, norm=nn.SyncBatchNorm(4)).train()(torch.zeros(0, 3, 5, 5))


def test_aliases_are_torch_classes():
    assert ConvTranspose2d is nn.ConvTranspose2d and BatchNorm2d is nn.BatchNorm2d
    assert Linear is nn.Linear and interpolate is F.interpolate


def test_cat_single_tensor_is_returned_as_is():
    t = torch.randn(3, 2)
    assert cat([t]) is t
    torch.testing.assert_close(cat([t, t], dim=1), torch.cat([t, t], 1))
    with pytest.raises(TypeError, match="list or tuple"):
        cat(t)


def test_nonzero_tuple_and_shapes_to_tensor_and_move_device_like():
    x = torch.tensor([[0, 1], [2, 0]])
    rows, cols = nonzero_tuple(x)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    assert shapes_to_tensor([3, 4]).tolist() == [3, 4]
    src = torch.ones(2)
    assert move_device_like(src, torch.zeros(1)).device == src.device


def test_cross_entropy_empty_is_zero_and_connected():
    logits = torch.randn(0, 5, requires_grad=True)
    loss = cross_entropy(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    logits = torch.randn(4, 5)
    target = torch.tensor([0, 1, 2, 4])
    torch.testing.assert_close(cross_entropy(logits, target), F.cross_entropy(logits, target))
    summed = cross_entropy(logits[:0], target[:0], reduction="sum")
    assert summed.item() == 0.0
    wrapped = empty_input_loss_func_wrapper(F.binary_cross_entropy_with_logits)
    assert wrapped(torch.zeros(0), torch.zeros(0)).item() == 0.0


def test_shape_spec_defaults_and_fields():
    spec = ShapeSpec(channels=256, stride=4)
    assert spec == (256, None, None, 4)
    assert spec.height is None and spec.width is None
    assert ShapeSpec() == (None, None, None, None)
    assert ShapeSpec(1, 2, 3, 4)._replace(stride=8).stride == 8
