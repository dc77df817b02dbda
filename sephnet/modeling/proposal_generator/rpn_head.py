"""RPN head with an optional per-level norm after its shared conv (sephv17,
docs/components.md#anchors-and-rpn)."""
from typing import List, Tuple

import torch
from torch import nn

from sephnet.backend import (
    RPN_HEAD_REGISTRY,
    Conv2d,
    ShapeSpec,
    build_anchor_generator,
    configurable,
)
from sephnet.layers.norm import build_norm, norm_includes_activation

__all__ = ["SephRPNHead"]


@RPN_HEAD_REGISTRY.register()
class SephRPNHead(nn.Module):
    """detectron2's ``StandardRPNHead`` with a separate norm for every pyramid level.

    ::

        feature of level l: [N, C, H_l, W_l]
          -> conv 3x3, C -> D           shared by all levels (bias only without a norm)
          -> norms[l]                   optional; own parameters per level
          -> ReLU                       unless the norm has its own non-linearity (EvoNormS0)
          +-> objectness_logits 1x1 -> [N, A, H_l, W_l]
          +-> anchor_deltas 1x1     -> [N, A * box_dim, H_l, W_l]

    Outputs and their layout are ``StandardRPNHead``'s, so detectron2's ``RPN`` (and
    sephnet's) use this head unchanged. With ``norm=""`` it has the same parameters,
    state-dict names (``conv``, ``objectness_logits``, ``anchor_deltas``) and outputs as
    ``StandardRPNHead`` with one conv. Normalising per level follows the original: statistics
    and affine parameters differ between P2 and P6, which a shared norm would mix.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_levels: int,
        box_dim: int = 4,
        conv_dim: int = -1,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            in_channels: C, channels of every input level.
            num_anchors: A, anchors per spatial position.
            num_levels: L, number of input levels (one norm per level).
            box_dim: deltas per anchor (4 for axis-aligned boxes).
            conv_dim: D, output channels of the shared conv; -1 keeps C.
            norm: a ``NORM`` config value (see :func:`sephnet.layers.norm.resolve_norm`);
                "" for none.
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
        """
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"SephRPNHead: num_levels={num_levels}; expected >= 1.")
        out_channels = in_channels if conv_dim == -1 else conv_dim
        if out_channels <= 0:
            raise ValueError(f"SephRPNHead: conv_dim={conv_dim}; expected -1 or a positive int.")
        self.num_levels = num_levels
        # Same creation order as StandardRPNHead (conv, objectness, deltas), so a given seed
        # draws the same weights for both heads.
        self.conv = Conv2d(
            in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=norm == ""
        )
        if norm:
            self.norms = nn.ModuleList(
                build_norm(norm, out_channels, groups=norm_groups, eps=norm_eps)
                for _ in range(num_levels)
            )
        else:
            self.norms = None
        self.activation = None if norm_includes_activation(norm) else nn.ReLU()
        self.objectness_logits = nn.Conv2d(out_channels, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(out_channels, num_anchors * box_dim, kernel_size=1, stride=1)

        # detectron2's RPN head initialisation.
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        channels = sorted({s.channels for s in input_shape})
        if len(channels) != 1:
            raise ValueError(
                f"SephRPNHead shares its conv across MODEL.RPN.IN_FEATURES="
                f"{list(cfg.MODEL.RPN.IN_FEATURES)}; their channels must be equal, got {channels}."
            )
        # The head predicts for the anchor generator's cells; building one has no side effect.
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = sorted(set(anchor_generator.num_anchors))
        if len(num_anchors) != 1:
            raise ValueError(
                "SephRPNHead needs the same number of anchors per position on every level "
                f"(MODEL.ANCHOR_GENERATOR), got {anchor_generator.num_anchors}."
            )
        conv_dims = list(cfg.MODEL.RPN.CONV_DIMS)
        if len(conv_dims) != 1:
            raise ValueError(
                f"MODEL.RPN.CONV_DIMS={conv_dims}: SephRPNHead has one shared conv; expected "
                "a single entry."
            )
        return {
            "in_channels": channels[0],
            "num_anchors": num_anchors[0],
            "num_levels": len(input_shape),
            "box_dim": anchor_generator.box_dim,
            "conv_dim": conv_dims[0],
            "norm": cfg.MODEL.SEPH.RPN_HEAD.NORM,
            "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
            "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: L maps ``[N, C, H_l, W_l]``, in the order of MODEL.RPN.IN_FEATURES.

        Returns:
            objectness logits: L tensors ``[N, A, H_l, W_l]``;
            anchor deltas: L tensors ``[N, A * box_dim, H_l, W_l]``.
        """
        if len(features) != self.num_levels:
            raise ValueError(
                f"SephRPNHead was built for {self.num_levels} levels (one norm each), "
                f"got {len(features)} feature maps."
            )
        pred_objectness_logits = []
        pred_anchor_deltas = []
        for level, x in enumerate(features):
            t = self.conv(x)
            if self.norms is not None:
                t = self.norms[level](t)
            if self.activation is not None:
                t = self.activation(t)
            pred_objectness_logits.append(self.objectness_logits(t))
            pred_anchor_deltas.append(self.anchor_deltas(t))
        return pred_objectness_logits, pred_anchor_deltas
