"""The dense head of the RetinaNet-style proposal generator (sephv9,
docs/components.md#retinanet-proposal-generator)."""
import math
from typing import List, Tuple

import torch
from torch import nn

from sephnet.modeling.dense_tower import SharedConvTower

__all__ = ["RetinaNetPGHead"]


class RetinaNetPGHead(nn.Module):
    """RetinaNet's two towers with one foreground class: objectness logits and box deltas.

    ::

        feature of level l: [N, C, H_l, W_l]
          +-> cls_tower: num_convs x (conv3x3 C->C shared, norm[l], act) -> cls_score 3x3
          |                                            -> objectness logits [N, A, H_l, W_l]
          +-> box_tower: same layers, own weights      -> bbox_pred 3x3
                                                       -> anchor deltas [N, A*4, H_l, W_l]

    The per-level norm (the original's, e.g. EvoNormS0 with no activation after it) keeps
    separate statistics and affine parameters for every level. The convs have no bias when
    a norm follows. Initialisation is detectron2's RetinaNet: normal std 0.01, zero bias, the
    objectness bias at ``-log((1 - prior_prob) / prior_prob)``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_levels: int,
        num_convs: int,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        prior_prob: float = 0.01,
        box_dim: int = 4,
    ):
        """
        Args:
            in_channels: C, channels of every level.
            num_anchors: A, anchors per position.
            num_levels: L (one norm per level and conv).
            num_convs: convs per tower (sephv9: 1), >= 0.
            norm: a NORM config value (``""``, ``"GN"``, ``"EvoNormS0"``, ...).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms.
            prior_prob: initial foreground probability, in (0, 1).
            box_dim: deltas per anchor.

        Raises:
            ValueError: a count or ``prior_prob`` is out of range.
        """
        super().__init__()
        if num_levels < 1 or num_convs < 0 or num_anchors < 1:
            raise ValueError(
                f"RetinaNetPGHead: num_levels={num_levels}, num_convs={num_convs}, "
                f"num_anchors={num_anchors}; expected >= 1, >= 0, >= 1."
            )
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"RetinaNetPGHead: prior_prob={prior_prob!r}; expected (0, 1).")
        self.num_levels = num_levels
        tower = dict(
            num_convs=num_convs,
            num_levels=num_levels,
            norm=norm,
            norm_groups=norm_groups,
            norm_eps=norm_eps,
        )
        self.cls_tower = SharedConvTower(in_channels, **tower)
        self.box_tower = SharedConvTower(in_channels, **tower)
        self.cls_score = nn.Conv2d(in_channels, num_anchors, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * box_dim, kernel_size=3, padding=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0.0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: L maps ``[N, C, H_l, W_l]``.

        Returns:
            objectness logits: L tensors ``[N, A, H_l, W_l]``;
            anchor deltas: L tensors ``[N, A * box_dim, H_l, W_l]``.
        """
        if len(features) != self.num_levels:
            raise ValueError(
                f"RetinaNetPGHead was built for {self.num_levels} levels, got {len(features)}."
            )
        logits, deltas = [], []
        for level, x in enumerate(features):
            logits.append(self.cls_score(self.cls_tower(x, level)))
            deltas.append(self.bbox_pred(self.box_tower(x, level)))
        return logits, deltas
