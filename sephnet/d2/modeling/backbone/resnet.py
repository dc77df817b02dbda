"""ResNet / ResNeXt backbones (He et al., "Deep Residual Learning"), detectron2 layout.

Module tree (names are the ``state_dict`` contract)::

    stem.conv1 (7x7/2, norm) -> relu -> maxpool 3x3/2          stride 4
    res2 .. res5: nn.Sequential of blocks, block i = "resK.i"  strides 4, 8, 16, 32
        BasicBlock:      conv1 (3x3) -> conv2 (3x3) [+ shortcut]
        BottleneckBlock: conv1 (1x1) -> conv2 (3x3, groups) -> conv3 (1x1) [+ shortcut]
        DeformBottleneckBlock: as BottleneckBlock, conv2 deformable, its offsets (and
            modulation mask) predicted from conv1's output by conv2_offset (3x3)
    [avgpool + linear when num_classes is given]

Every conv is a ``sephnet.d2.layers.Conv2d`` carrying its norm as ``.norm``.
"""

from typing import Dict, List, Optional, Sequence, Type

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from sephnet.d2.layers import (
    CNNBlockBase,
    Conv2d,
    DeformConv,
    ModulatedDeformConv,
    ShapeSpec,
    get_norm,
)

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "ResNetBlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "BasicStem",
    "ResNet",
    "make_stage",
    "build_resnet_backbone",
]

ResNetBlockBase = CNNBlockBase
"""Backward-compatible alias of :class:`CNNBlockBase`."""

_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def _projection_shortcut(
    in_channels: int, out_channels: int, stride: int, norm
) -> Optional[Conv2d]:
    """1x1 projection used when a block changes the channel count, else None (identity)."""
    if in_channels == out_channels:
        return None
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size=1,
        stride=stride,
        bias=False,
        norm=get_norm(norm, out_channels),
    )


def _residual_output(
    out: torch.Tensor, x: torch.Tensor, shortcut: Optional[nn.Module]
) -> torch.Tensor:
    """relu(out + shortcut(x)), with an identity shortcut when ``shortcut`` is None."""
    out += x if shortcut is None else shortcut(x)
    return F.relu_(out)


class BasicBlock(CNNBlockBase):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    Args:
        in_channels, out_channels: channel counts.
        stride: stride of the first conv (and of the projection shortcut).
        norm: norm name or callable for every conv (see ``get_norm``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm="BN"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)."""
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        return _residual_output(out, x, self.shortcut)


class BottleneckBlock(CNNBlockBase):
    """1x1 reduce -> 3x3 (grouped, dilated) -> 1x1 expand, with a residual connection.

    Args:
        in_channels, out_channels: channel counts of the block.
        bottleneck_channels: channels of the 3x3 conv.
        stride: spatial stride of the block.
        num_groups: groups of the 3x3 conv (ResNeXt cardinality).
        norm: norm name or callable for every conv.
        stride_in_1x1: put the stride on the first 1x1 conv (MSRA/Caffe2 ResNets) instead of
            the 3x3 conv (torchvision-style ResNets).
        dilation: dilation (and padding) of the 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        # Like detectron2, the last norm of the branch keeps its default (gamma = 1) init.
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        return _residual_output(out, x, self.shortcut)


class DeformBottleneckBlock(CNNBlockBase):
    """:class:`BottleneckBlock` whose 3x3 conv is deformable (Dai et al. 2017; Zhu et al. 2019).

    ``conv2_offset`` (a 3x3 conv with bias, same stride/dilation as conv2, initialised to 0
    so training starts from the ordinary conv) maps conv1's output to 18 * G offset channels
    (``deform_modulated=False``) or 27 * G channels (modulated), G = ``deform_num_groups``.
    Modulated: the first 18 * G channels are the offsets and the last 9 * G, through a
    sigmoid, the mask.

    Args: as :class:`BottleneckBlock`, plus
        deform_modulated: use :class:`ModulatedDeformConv` (DCNv2) instead of :class:`DeformConv`.
        deform_num_groups: offset groups G.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        offsets_per_group = 27 if deform_modulated else 18  # (2 or 3) values x 9 taps
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            offsets_per_group * deform_num_groups,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        conv_class = ModulatedDeformConv if deform_modulated else DeformConv
        self.conv2 = conv_class(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)."""
        out = F.relu_(self.conv1(x))
        offset = self.conv2_offset(out)
        if self.deform_modulated:
            num_offsets = offset.shape[1] // 3 * 2
            mask = offset[:, num_offsets:].sigmoid()
            out = self.conv2(out, offset[:, :num_offsets], mask)
        else:
            out = self.conv2(out, offset)
        out = self.conv3(F.relu_(out))
        return _residual_output(out, x, self.shortcut)


class BasicStem(CNNBlockBase):
    """7x7/2 conv + norm, ReLU, 3x3/2 max pool (padding 1): total stride 4.

    Args:
        in_channels: image channels.
        out_channels: stem width.
        norm: norm name or callable after the conv.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        self.in_channels = in_channels
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, ~H/4, ~W/4)."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(Backbone):
    """A stem followed by residual stages named "res2", "res3", ...

    Args:
        stem: module with ``stride`` and ``out_channels`` attributes (e.g. :class:`BasicStem`).
        stages: one list of :class:`CNNBlockBase` per stage.
        num_classes: if given, add global average pooling and a ``linear`` classifier.
        out_features: names to return from ``forward``, among "stem", "res2", ..., "linear".
            Stages after the last requested one are not built. Default: the last layer.
        freeze_at: number of leading stages to freeze (see :meth:`freeze`).

    Raises:
        ValueError: for an empty stage, or an ``out_features`` name that is not a child.
        TypeError: for a block that is not a :class:`CNNBlockBase`.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: List[List[CNNBlockBase]],
        num_classes: Optional[int] = None,
        out_features: Optional[List[str]] = None,
        freeze_at: int = 0,
    ):
        super().__init__()
        self.stem = stem
        self.num_classes = num_classes

        stride = self.stem.stride
        self._out_feature_strides = {"stem": stride}
        self._out_feature_channels = {"stem": self.stem.out_channels}

        if out_features is not None:
            # Stages nobody reads would only cost memory (and break DDP's unused-param check).
            stage_index = {"res2": 1, "res3": 2, "res4": 3, "res5": 4}
            stages = stages[: max(stage_index.get(f, 0) for f in out_features)]

        stage_names, self.stages = [], []
        channels = self.stem.out_channels
        for i, blocks in enumerate(stages):
            if len(blocks) == 0:
                raise ValueError(f"ResNet stage {i} has no blocks")
            for block in blocks:
                if not isinstance(block, CNNBlockBase):
                    raise TypeError(
                        f"ResNet blocks must be CNNBlockBase, got {type(block).__name__}"
                    )
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            stage_names.append(name)
            self.stages.append(stage)
            for block in blocks:
                stride *= block.stride
            channels = blocks[-1].out_channels
            self._out_feature_strides[name] = int(stride)
            self._out_feature_channels[name] = channels
        self.stage_names = tuple(stage_names)

        last = self.stage_names[-1] if self.stage_names else "stem"
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(channels, num_classes)
            # Goyal et al., "Accurate, Large Minibatch SGD", sec. 5.1: N(0, 0.01) classifier init.
            nn.init.normal_(self.linear.weight, std=0.01)
            last = "linear"

        self._out_features = list(out_features) if out_features is not None else [last]
        if len(self._out_features) == 0:
            raise ValueError("ResNet out_features must not be empty")
        children = [name for name, _ in self.named_children()]
        for name in self._out_features:
            if name not in children:
                raise ValueError(
                    f"ResNet out_features entry {name!r} is not a layer; available: {', '.join(children)}"
                )
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) images -> dict of the requested features ((N, num_classes) for "linear").

        Raises:
            ValueError: if ``x`` is not 4-D.
        """
        if x.dim() != 4:
            raise ValueError(
                f"ResNet takes an input of shape (N, C, H, W). Got {tuple(x.shape)} instead!"
            )
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = torch.flatten(self.avgpool(x), 1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the stem (``freeze_at >= 1``) and stages res2 .. res{freeze_at} (``freeze_at >= k``).

        Frozen blocks get ``requires_grad=False`` and their BatchNorms become FrozenBatchNorm2d.
        Returns self.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(
        block_class: Type[CNNBlockBase],
        num_blocks: int,
        *,
        in_channels: int,
        out_channels: int,
        **kwargs,
    ) -> List[CNNBlockBase]:
        """Build ``num_blocks`` blocks of ``block_class`` forming one stage.

        The first block maps ``in_channels`` to ``out_channels``; the others keep
        ``out_channels``. A keyword ``foo_per_block=[v0, v1, ...]`` (one value per block) passes
        ``foo=v_i`` to block i; any other keyword is passed unchanged to every block. Example:
        ``stride_per_block=[2, 1, 1]`` downsamples in the first block only.

        Raises:
            ValueError: a ``*_per_block`` list of the wrong length, or both ``foo`` and
                ``foo_per_block`` given.
        """
        per_block = {}
        shared = {}
        for key, value in kwargs.items():
            if key.endswith("_per_block"):
                base = key[: -len("_per_block")]
                if len(value) != num_blocks:
                    raise ValueError(
                        f"Argument '{key}' of make_stage should have the same length as "
                        f"num_blocks={num_blocks}, got {len(value)}."
                    )
                if base in kwargs:
                    raise ValueError(f"Cannot call make_stage with both {key} and {base}!")
                per_block[base] = value
            else:
                shared[key] = value
        blocks = []
        for i in range(num_blocks):
            block_kwargs = dict(shared)
            block_kwargs.update({k: v[i] for k, v in per_block.items()})
            blocks.append(
                block_class(in_channels=in_channels, out_channels=out_channels, **block_kwargs)
            )
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(
        depth: int, block_class: Optional[Type[CNNBlockBase]] = None, **kwargs
    ) -> List[List[CNNBlockBase]]:
        """The four stages of a standard ResNet-``depth`` (18, 34, 50, 101 or 152).

        Stage strides are (1, 2, 2, 2); widths 64..512 (BasicBlock, depth < 50) or 256..2048
        with ``bottleneck_channels = out_channels // 4`` (depth >= 50). ``kwargs`` go to
        :meth:`make_stage` and must not set strides or channels.

        Raises:
            ValueError: for an unsupported depth.
        """
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(
                f"ResNet depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}"
            )
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        if depth < 50:
            in_channels, out_channels = [64, 64, 128, 256], [64, 128, 256, 512]
        else:
            in_channels, out_channels = [64, 256, 512, 1024], [256, 512, 1024, 2048]
        stages = []
        for n, first_stride, c_in, c_out in zip(
            _BLOCKS_PER_STAGE[depth], [1, 2, 2, 2], in_channels, out_channels
        ):
            if depth >= 50:
                kwargs["bottleneck_channels"] = c_out // 4
            stages.append(
                ResNet.make_stage(
                    block_class=block_class,
                    num_blocks=n,
                    stride_per_block=[first_stride] + [1] * (n - 1),
                    in_channels=c_in,
                    out_channels=c_out,
                    **kwargs,
                )
            )
        return stages


def make_stage(*args, **kwargs) -> List[CNNBlockBase]:
    """Deprecated alias of :meth:`ResNet.make_stage`."""
    return ResNet.make_stage(*args, **kwargs)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Build a ResNet from ``cfg.MODEL.RESNETS`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``.

    Reads DEPTH (18/34/50/101/152), NORM, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, NUM_GROUPS,
    WIDTH_PER_GROUP, STRIDE_IN_1X1, RES5_DILATION (1 or 2), OUT_FEATURES,
    DEFORM_ON_PER_STAGE (res2..res5: use :class:`DeformBottleneckBlock` there),
    DEFORM_MODULATED, DEFORM_NUM_GROUPS.

    Raises:
        ValueError: for an unsupported depth or dilation, or R18/R34 settings they cannot use.
    """
    res = cfg.MODEL.RESNETS
    norm = res.NORM
    depth = res.DEPTH
    num_groups = res.NUM_GROUPS
    in_channels = res.STEM_OUT_CHANNELS
    out_channels = res.RES2_OUT_CHANNELS
    bottleneck_channels = num_groups * res.WIDTH_PER_GROUP
    res5_dilation = res.RES5_DILATION
    deform_on_per_stage = res.DEFORM_ON_PER_STAGE

    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}"
        )
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")
    if depth in (18, 34):
        if out_channels != 64:
            raise ValueError(
                f"Must set MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34, got {out_channels}"
            )
        if any(deform_on_per_stage):
            raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE cannot be used with R18/R34")
        if res5_dilation != 1:
            raise ValueError(
                f"Must set MODEL.RESNETS.RES5_DILATION = 1 for R18/R34, got {res5_dilation}"
            )
        if num_groups != 1:
            raise ValueError(f"Must set MODEL.RESNETS.NUM_GROUPS = 1 for R18/R34, got {num_groups}")
    if len(deform_on_per_stage) != 4:
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE needs one entry per stage res2..res5, got "
            f"{list(deform_on_per_stage)}"
        )

    stem = BasicStem(in_channels=input_shape.channels, out_channels=in_channels, norm=norm)
    stages = []
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        is_res5 = idx == 3
        dilation = res5_dilation if is_res5 else 1
        # res2 keeps the stem's resolution; a dilated res5 keeps res4's.
        first_stride = 1 if idx == 0 or (is_res5 and dilation == 2) else 2
        stage_kwargs = {
            "num_blocks": num_blocks,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        if depth in (18, 34):
            stage_kwargs["block_class"] = BasicBlock
        else:
            stage_kwargs.update(
                block_class=BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=res.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=num_groups,
            )
            if deform_on_per_stage[idx]:
                stage_kwargs.update(
                    block_class=DeformBottleneckBlock,
                    deform_modulated=res.DEFORM_MODULATED,
                    deform_num_groups=res.DEFORM_NUM_GROUPS,
                )
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(
        stem, stages, out_features=res.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT
    )
