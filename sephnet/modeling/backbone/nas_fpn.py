"""NAS-FPN (Ghiasi et al., "NAS-FPN: Learning Scalable Feature Pyramid Architecture", 2019):
the paper's searched pyramid network (its Fig. 7f), stacked NUM_STACKS times.

::

    inputs: 5 levels (e.g. res3, res4, res5 and the extra levels res6, res7), each
            1x1 conv + norm -> P3 .. P7 (OUT_CHANNELS wide)
    one stack (cell(op, a, b -> level): resize a and b to the level's size, op, ReLU,
    3x3 conv + norm):
        m   = cell(gp,  P6, P4 -> 4)
        n   = cell(sum, m,  P4 -> 4)
        P3' = cell(sum, n,  P3 -> 3)
        P4' = cell(sum, P3', n -> 4)
        P5' = cell(sum, P5, cell(gp, P4', P3' -> 5) -> 5)
        P7' = cell(sum, P7, cell(gp, P5', n -> 7) -> 7)
        P6' = cell(gp,  P7', P5' -> 6)
    sum(a, b) = a + b;   gp(a, b) = b + a * sigmoid(global_avg_pool(b))
    resize: nearest upsampling, or max-pooling by the stride ratio
    outputs p3 .. p7 of the last stack
"""
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from sephnet.backend import BACKBONE_REGISTRY, ShapeSpec, configurable
from sephnet.layers.blocks import conv_norm_act
from sephnet.modeling.backbone.hooked_backbone import build_hooked_neck_backbone
from sephnet.modeling.backbone.top_down import pyramid_io

__all__ = ["MergingCell", "NASFPN", "build_seph_nas_fpn_backbone"]

# (name, op, input a, input b, output level); inputs name levels 0..4 (P3..P7) of the stack's
# input, or earlier cells. Order = evaluation order.
_CELLS = (
    ("m", "gp", "in3", "in1", 1),
    ("n", "sum", "m", "in1", 1),
    ("out0", "sum", "n", "in0", 0),
    ("out1", "sum", "out0", "n", 1),
    ("g5", "gp", "out1", "out0", 2),
    ("out2", "sum", "in2", "g5", 2),
    ("g7", "gp", "out2", "n", 4),
    ("out4", "sum", "in4", "g7", 4),
    ("out3", "gp", "out4", "out2", 3),
)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-1] < size[-1]:
        return F.interpolate(x, size=size, mode="nearest")
    factor = x.shape[-1] // size[-1]
    return F.max_pool2d(x, kernel_size=factor, stride=factor, ceil_mode=True)


class MergingCell(nn.Module):
    """``op(resize(a), resize(b)) -> ReLU -> 3x3 conv + norm`` with op "sum" or "gp"."""

    def __init__(self, op: str, channels: int, **norm):
        super().__init__()
        if op not in ("sum", "gp"):
            raise ValueError(f"MergingCell op must be 'sum' or 'gp', got {op!r}")
        self.op = op
        self.conv = conv_norm_act(channels, channels, activation=False, **norm)

    def forward(self, a: torch.Tensor, b: torch.Tensor, size) -> torch.Tensor:
        a, b = _resize(a, size), _resize(b, size)
        if self.op == "sum":
            merged = a + b
        else:
            merged = b + a * torch.sigmoid(F.adaptive_avg_pool2d(b, 1))
        return self.conv(F.relu(merged))


class NASFPN(nn.Module):
    """Laterals + ``num_stacks`` NAS-FPN stacks (see the module docstring).

    Args:
        input_shapes, in_features (exactly 5 levels, strides doubling), out_channels, norm,
        norm_groups, norm_eps: as :class:`PAFPN`.
        num_stacks: repetitions of the searched stack (7 in the paper's RetinaNet).
    State dict: ``lateral.<l>.*``, ``stacks.<k>.<cell name>.conv.*``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int,
        num_stacks: int = 7,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.out_names, strides = pyramid_io(input_shapes, in_features, "NASFPN")
        if len(in_features) != 5:
            raise ValueError(f"NASFPN needs 5 input levels (P3-P7 in the paper), got {list(in_features)}")
        if num_stacks < 1:
            raise ValueError(f"NASFPN num_stacks must be >= 1, got {num_stacks}")
        kwargs = dict(norm=norm, norm_groups=norm_groups, norm_eps=norm_eps)
        self.lateral = nn.ModuleList(
            conv_norm_act(input_shapes[f].channels, out_channels, kernel_size=1, activation=False, **kwargs)
            for f in in_features
        )
        self.stacks = nn.ModuleList(
            nn.ModuleDict({name: MergingCell(op, out_channels, **kwargs) for name, op, _, _, _ in _CELLS})
            for _ in range(num_stacks)
        )
        self._shapes = {k: ShapeSpec(channels=out_channels, stride=s) for k, s in zip(self.out_names, strides)}
        self.size_divisibility = strides[-1]

    @classmethod
    def from_config(cls, cfg, input_shapes):
        return {
            "input_shapes": input_shapes,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "num_stacks": cfg.MODEL.SEPH.NAS_FPN.NUM_STACKS,
            "norm": cfg.MODEL.FPN.NORM,
            "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
            "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
        }

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """{in_feature: (N, C_l, H_l, W_l)} -> {p<level>: (N, out_channels, H_l, W_l)}."""
        levels = [conv(features[f]) for conv, f in zip(self.lateral, self.in_features)]
        sizes = [x.shape[-2:] for x in levels]
        for stack in self.stacks:
            maps = {f"in{i}": x for i, x in enumerate(levels)}
            for name, _, a, b, level in _CELLS:
                maps[name] = stack[name](maps[a], maps[b], sizes[level])
            levels = [maps[f"out{i}"] for i in range(5)]
        return dict(zip(self.out_names, levels))


@BACKBONE_REGISTRY.register()
def build_seph_nas_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet -> extra levels (``MODEL.SEPH.NECKS.EXTRA_LEVELS``: 2 for P6, P7) -> hooks around a
    :class:`NASFPN` on the 5 ``MODEL.FPN.IN_FEATURES`` (``MODEL.SEPH.NAS_FPN.NUM_STACKS``)."""
    return build_hooked_neck_backbone(cfg, input_shape, NASFPN)
