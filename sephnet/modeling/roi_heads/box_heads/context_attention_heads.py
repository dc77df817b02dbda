"""Box heads that read the multi-scale pooler's (box, context) crops (docs/components.md#box-heads).

Each head turns ``ContextPair(box x0[R, C, S, S], context x1[R, C, M, M])`` into the inputs of
an inner :class:`~sephnet.modeling.roi_heads.box_heads.conv_fc_heads.FCClsConvBoxHead` (cls tower = FCs,
box tower = convs; same keys ``MODEL.SEPH.BOX_HEAD.*`` and ``MODEL.ROI_BOX_HEAD.NORM``), so
``output_shapes`` and ``state_dict`` (``head.*``) follow that head.

* :class:`BoxQueryAttentionHead` (log V5, "sephv5", config sephv25): the box crop queries the
  context; needs M == S (the pooler up to 2020-10-29: 1.5x, 7x7);
* :class:`ContextQueryAttentionHead` (log V6, sephv25_1): the context crop queries the box;
  M == S as well;
* :class:`ContextStripAttentionHead` (log V7, sephv25_2): the context border split into four
  strips gates the box crop's channels; needs M > S, M - S even (the 2020-10-30 pooler:
  13/7x, 13x13).

Registered in ``SEPH_BOX_HEAD_REGISTRY``; they need ``MODEL.SEPH.MULTISCALE_POOLER.ENABLED``
and declare ``input_kind = "context_pair"`` (see :mod:`sephnet.modeling.roi_heads.box_heads`).
"""
from typing import Dict, List

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.norm import build_norm
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_heads import FCClsConvBoxHead
from sephnet.modeling.roi_heads.box_heads.conv_fc_tower import conv_block, head_activation
from sephnet.layers.cross_attention import CrossAttention
from sephnet.modeling.roi_heads.decoupled_features import ContextPair, DecoupledFeatures

__all__ = ["BoxQueryAttentionHead", "ContextQueryAttentionHead", "ContextStripAttentionHead"]


def _pair(name: str, x) -> ContextPair:
    if not isinstance(x, ContextPair):
        raise TypeError(
            f"{name} reads the multi-scale pooler's ContextPair(box, context); got "
            f"{type(x).__name__} (set MODEL.SEPH.MULTISCALE_POOLER.ENABLED=True)."
        )
    return x


class _NormAct(nn.Module):
    """The box head's norm, or a ReLU without a norm (as the towers' layers, ``head_activation``)."""

    def __init__(
        self, channels: int, *, norm: str, norm_groups: int, norm_eps: float,
        relu_after_norm: bool = False,
    ):
        super().__init__()
        self.norm = build_norm(norm, channels, groups=norm_groups, eps=norm_eps)
        self.relu = head_activation(norm, relu_after_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        return torch.relu(x) if self.relu else x


def _inner_head_kwargs(cfg, input_shape: ShapeSpec) -> dict:
    """FCClsConvBoxHead's arguments from the config, for the box-crop shape."""
    return FCClsConvBoxHead.from_config(cfg, input_shape)


class _QueryAttentionHead(nn.Module):
    """V5/V6: ``box_in = act(norm(gamma * attention(Q, K = V) + V))``, ``cls_in = x0``.

    ::

        x0 [R, C, S, S] (box) ---------------------------------------> cls tower (FCs) --> cls
        (Q, K=V) = (x0, x1) [V5] | (x1, x0) [V6]
        V + gamma * attention(Q, K, V)  (multipliers 1,1,1, 1 head, gamma init 0)
            -> norm -> act = box_in [R, C, S, S] -> box tower (convs) -------------> box
                                          box conv n-1 output -> conv3x3 + norm/act -> iou

    Reproduced literally (docs/components.md#box-heads): the residual is around the *value* input,
    which is why both crops must have the same size (M == S). With the IoU branch on, the
    IoU feature is one extra conv on the input of the last box conv (the second-to-last
    box conv's output), as in the original.
    """

    query_is_box = True
    #: What the head reads: the multi-scale pooler's ContextPair (not one pooled map).
    input_kind = "context_pair"
    reads_decoupled = False
    normed_widths = ()

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        context_resolution: int,
        head_kwargs: dict,
        iou_tower: bool = False,
    ):
        """
        Args:
            input_shape: box crop ``ShapeSpec(channels=C, height=S, width=S)``.
            context_resolution: M, the context crop's size; must equal S.
            head_kwargs: arguments of the inner ``FCClsConvBoxHead`` except ``iou_tower``
                (``num_fc``, ``fc_dim``, ``num_conv``, ``conv_dim``, ``norm``,
                ``norm_groups``, ``norm_eps``; ``input_shape`` is set here).
            iou_tower: add the IoU conv (the IoU branch is on).

        Raises:
            ValueError: M != S.
        """
        super().__init__()
        name = type(self).__name__
        size = input_shape.height
        if context_resolution != size or input_shape.width != size:
            raise ValueError(
                f"{name}: context crop {context_resolution}x{context_resolution} and box crop "
                f"{input_shape.height}x{input_shape.width} must have the same size (its residual "
                "adds them); use MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION equal to "
                "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION (the 1.5x / 7x7 pooler)."
            )
        c = input_shape.channels
        kwargs = {k: v for k, v in head_kwargs.items() if k not in ("input_shape", "iou_tower")}
        norms = {
            k: kwargs[k]
            for k in ("norm", "norm_groups", "norm_eps", "relu_after_norm")
            if k in kwargs
        }
        self.attention = CrossAttention(c, context_channels=c, multipliers=(1, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(()))
        self.norm_act = _NormAct(c, **{"norm": "", "norm_groups": 32, "norm_eps": 1e-5, **norms})
        self.head = FCClsConvBoxHead(input_shape=input_shape, iou_tower=False, **kwargs)
        self.iou_conv = None
        self._iou_shape = None
        if iou_tower:
            conv_dim = kwargs["conv_dim"]
            in_ch = conv_dim if kwargs["num_conv"] > 1 else c
            self.iou_conv = conv_block(
                in_ch,
                conv_dim,
                padding=1,
                norm=norms.get("norm", ""),
                norm_groups=norms.get("norm_groups", 32),
                norm_eps=norms.get("norm_eps", 1e-5),
                relu_after_norm=norms.get("relu_after_norm", False),
            )
            self._iou_shape = ShapeSpec(channels=conv_dim, height=size, width=size)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {
            "input_shape": input_shape,
            "context_resolution": cfg.MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION,
            "head_kwargs": _inner_head_kwargs(cfg, input_shape),
            "iou_tower": cfg.MODEL.SEPH.IOU_BRANCH.ENABLED,
        }

    def forward(self, x: ContextPair) -> DecoupledFeatures:
        """
        Args:
            x: ``ContextPair(box[R, C, S, S], context[R, C, S, S])``.

        Returns:
            ``DecoupledFeatures(cls[R, fc_dim], box[R, conv_dim, S, S], iou)``; ``iou`` is
            ``[R, conv_dim, S, S]`` with the IoU conv, else None.
        """
        x0, x1 = _pair(type(self).__name__, x)
        q_in, kv_in = (x0, x1) if self.query_is_box else (x1, x0)
        box_in = self.norm_act(kv_in + self.gamma * self.attention(q_in, kv_in))
        if self.iou_conv is None:
            return self.head(DecoupledFeatures(cls=x0, box=box_in))
        convs = list(self.head.box_tower)
        penultimate = box_in
        for conv in convs[:-1]:
            penultimate = conv(penultimate)
        return DecoupledFeatures(
            cls=self.head.cls_tower(x0), box=convs[-1](penultimate), iou=self.iou_conv(penultimate)
        )

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """The inner head's ``"cls"``/``"box"`` shapes, plus ``"iou"`` with the IoU conv."""
        shapes = dict(self.head.output_shapes)
        if self._iou_shape is not None:
            shapes["iou"] = self._iou_shape
        return shapes


@SEPH_BOX_HEAD_REGISTRY.register()
class BoxQueryAttentionHead(_QueryAttentionHead):
    """Log V5 (sephv25): Q = box crop, K = V = context crop; see :class:`_QueryAttentionHead`."""

    query_is_box = True


@SEPH_BOX_HEAD_REGISTRY.register()
class ContextQueryAttentionHead(_QueryAttentionHead):
    """Log V6 (sephv25_1): Q = context crop, K = V = box crop; box_in = norm(gamma O + x0)."""

    query_is_box = False


def border_strips(context: torch.Tensor, size: int) -> List[torch.Tensor]:
    """The four border strips of a context crop around its centred ``size x size`` window.

    With b = (M - size) / 2 (3 for M = 13, size = 7), rows/cols 0-based::

        top    rows [0, b)       x cols [b, b + size)   -> [R, C, b, size]
        right  rows [b, b + size) x cols [M - b, M)     -> [R, C, size, b]
        bottom rows [M - b, M)   x cols [b, b + size)   -> [R, C, b, size]
        left   rows [b, b + size) x cols [0, b)         -> [R, C, size, b]

    The corners are in no strip (as in the original).
    """
    m = context.shape[-1]
    b = (m - size) // 2
    mid = slice(b, b + size)
    return [
        context[:, :, :b, mid],
        context[:, :, mid, m - b:],
        context[:, :, m - b:, mid],
        context[:, :, mid, :b],
    ]


@SEPH_BOX_HEAD_REGISTRY.register()
class ContextStripAttentionHead(nn.Module):
    """Log V7 (sephv25_2): channel gate on the box crop from attention to the context border.

    ::

        x0 [R, C, S, S], x1 [R, C, M, M] (M = 13, S = 7)
        strip_j of x1 (top, right, bottom, left; :func:`border_strips`), j = 1..4:
            a_j = act(norm(attention_j(Q = x0, K = V = strip_j)))   multipliers 2,2,2, 1 head,
                                                                     no residual -> [R, C, S, S]
        concat_j a_j [R, 4C, S, S] -> global average [R, 4C]
            -> FC(C) + ReLU -> FC(C) + sigmoid = alpha [R, C]
        x^ = x0 * alpha -> FCClsConvBoxHead (cls = FCs, box = convs, IoU tower if enabled)

    Each strip has its own attention weights and norm (the original called the block four
    times, each with its own variables). With the IoU branch on, the inner head's IoU tower
    (``MODEL.SEPH.BOX_HEAD.IOU_NUM_CONV/FC``) reads x^ (sephnet's choice: the log has no V7
    IoU row).
    """

    #: What the head reads: the multi-scale pooler's ContextPair (not one pooled map).
    input_kind = "context_pair"
    reads_decoupled = False
    normed_widths = ()

    @configurable
    def __init__(self, *, input_shape: ShapeSpec, context_resolution: int, head_kwargs: dict):
        """
        Args:
            input_shape: box crop ``ShapeSpec(channels=C, height=S, width=S)``; C must be
                even (multipliers 2, 2, 2).
            context_resolution: M; M > S and M - S even.
            head_kwargs: arguments of the inner ``FCClsConvBoxHead`` (``input_shape`` is
                set here; ``iou_tower`` is kept).

        Raises:
            ValueError: M and S do not leave a border of whole cells, or C is odd.
        """
        super().__init__()
        size, m = input_shape.height, context_resolution
        if m <= size or (m - size) % 2:
            raise ValueError(
                f"ContextStripAttentionHead: context crop {m}x{m} must exceed the box crop "
                f"{size}x{size} by an even number of cells (the 2020-10-30 pooler: "
                "MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION=13 with POOLER_RESOLUTION=7)."
            )
        c = input_shape.channels
        self.size = size
        kwargs = {k: v for k, v in head_kwargs.items() if k != "input_shape"}
        norms = dict(
            norm=kwargs.get("norm", ""),
            norm_groups=kwargs.get("norm_groups", 32),
            norm_eps=kwargs.get("norm_eps", 1e-5),
            relu_after_norm=kwargs.get("relu_after_norm", False),
        )
        self.attentions = nn.ModuleList(
            CrossAttention(c, context_channels=c, multipliers=(2, 2, 2)) for _ in range(4)
        )
        self.norm_acts = nn.ModuleList(_NormAct(c, **norms) for _ in range(4))
        self.squeeze = nn.Linear(4 * c, c)
        self.excite = nn.Linear(c, c)
        self.head = FCClsConvBoxHead(input_shape=input_shape, **kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {
            "input_shape": input_shape,
            "context_resolution": cfg.MODEL.SEPH.MULTISCALE_POOLER.CONTEXT_RESOLUTION,
            "head_kwargs": _inner_head_kwargs(cfg, input_shape),
        }

    def gate(self, x: ContextPair) -> torch.Tensor:
        """The channel gate alpha ``[R, C]`` in (0, 1)."""
        x0, x1 = x
        strips = border_strips(x1, self.size)
        attended = [
            norm_act(attention(x0, strip))
            for attention, norm_act, strip in zip(self.attentions, self.norm_acts, strips)
        ]
        pooled = torch.cat(attended, dim=1).mean(dim=(2, 3))
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))

    def forward(self, x: ContextPair) -> DecoupledFeatures:
        """
        Args:
            x: ``ContextPair(box[R, C, S, S], context[R, C, M, M])``.

        Returns:
            The inner head's ``DecoupledFeatures`` for ``x0 * alpha``.
        """
        x = _pair(type(self).__name__, x)
        return self.head(x.box * self.gate(x)[:, :, None, None])

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """The inner ``FCClsConvBoxHead``'s ``output_shapes``."""
        return self.head.output_shapes
