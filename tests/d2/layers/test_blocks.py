"""CNNBlockBase.freeze and DepthwiseSeparableConv2d."""
import torch
from torch import nn
from torch.nn import functional as F

from sephnet.d2.layers import CNNBlockBase, Conv2d, DepthwiseSeparableConv2d, FrozenBatchNorm2d


class _Block(CNNBlockBase):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__(in_channels, out_channels, stride)
        self.conv = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return F.relu(self.conv(x))


def test_block_records_contract_and_freeze_converts_bn():
    block = _Block(3, 8, 2)
    assert (block.in_channels, block.out_channels, block.stride) == (3, 8, 2)
    with torch.no_grad():
        block.conv.norm.running_mean.uniform_(-1, 1)
        block.conv.norm.running_var.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = block(x)
    assert block.freeze() is block
    assert isinstance(block.conv.norm, FrozenBatchNorm2d)
    assert all(not p.requires_grad for p in block.parameters())
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 8, 4, 4)


def test_depthwise_separable_conv_structure():
    layer = DepthwiseSeparableConv2d(4, 6, norm1="BN", activation1=F.relu, norm2="", activation2=None)
    assert layer.depthwise.groups == 4 and layer.depthwise.bias is None
    assert layer.pointwise.bias is not None and layer.pointwise.norm is None
    assert isinstance(layer.depthwise.norm, nn.BatchNorm2d)
    x = torch.randn(1, 4, 5, 5)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.pointwise(layer.depthwise(x)))
    assert layer(x).shape == (1, 6, 5, 5)
