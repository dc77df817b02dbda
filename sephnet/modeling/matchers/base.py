"""The RPN anchor-matcher contract, its builder, and the geometry every matcher shares.

An anchor matcher labels the anchors of one image against that image's ground truth. It is
called as::

    matched_idxs, match_labels = matcher(gt_boxes, anchors, num_anchors_per_level)

Args:
    gt_boxes: ``Boxes`` (G, 4), XYXY in absolute input pixels (detectron2's convention).
    anchors: ``Boxes`` (N, 4), the anchors of all L levels concatenated level by level
        (finest first, as the RPN's anchor generator returns them).
    num_anchors_per_level: L ints summing to N (the ATSS family needs the levels).

Returns:
    matched_idxs: int64 (N,), the matched gt index of every anchor. For anchors that are not
        positive it is the gt of highest IoU (detectron2's ``Matcher`` convention), so
        ``gt_boxes[matched_idxs]`` is always valid; 0 when G = 0.
    match_labels: int8 (N,) in {-1 ignore, 0 negative, 1 positive}, exactly as detectron2's
        ``Matcher`` returns them, so the RPN's sampling and losses use them unchanged.

Edge cases: G = 0 gives all labels 0 (background) and indices 0; N = 0 gives empty outputs.

Unlike detectron2's ``Matcher`` (which takes an IoU matrix), these matchers take boxes: the
ATSS family needs anchor centres and levels, not only IoUs. Matchers hold no tensors and no
state; they are plain callables, not ``nn.Module`` s, so they add nothing to a checkpoint.
"""
from typing import Any, List, Tuple

import torch

from sephnet.backend import Boxes, CfgNode
from sephnet.modeling.registry import SEPH_ANCHOR_MATCHER_REGISTRY, get_registered

__all__ = [
    "build_anchor_matcher",
    "centers_inside_gt",
    "check_levels",
    "empty_match",
    "masked_mean_std",
]


def build_anchor_matcher(cfg: CfgNode, num_cell_anchors: int) -> Any:
    """Build the RPN anchor matcher named by ``MODEL.SEPH.RPN.MATCHER.NAME``.

    Every entry of ``SEPH_ANCHOR_MATCHER_REGISTRY`` is called as ``entry(cfg, num_cell_anchors)``
    (a ``@configurable`` class, or a preset function returning a configured matcher).

    Args:
        cfg: a config prepared by ``add_sephnet_config``.
        num_cell_anchors: anchors per feature-map location (A), e.g. 3 for three aspect ratios;
            ATSS-style candidate counts are multiples of it.

    Returns:
        A callable following the contract in this module's docstring.

    Raises:
        ValueError: the name is empty or not registered (the message lists registered names).
    """
    name = cfg.MODEL.SEPH.RPN.MATCHER.NAME
    if not name:
        raise ValueError(
            "MODEL.SEPH.RPN.MATCHER.NAME is empty; the empty name means detectron2's IoU "
            "Matcher, which the RPN builds itself (no sephnet anchor matcher to build)."
        )
    entry = get_registered(SEPH_ANCHOR_MATCHER_REGISTRY, name, "MODEL.SEPH.RPN.MATCHER.NAME")
    return entry(cfg, num_cell_anchors)


def check_levels(anchors: Boxes, num_anchors_per_level: List[int]) -> None:
    """Raise ``ValueError`` unless the level sizes add up to the number of anchors."""
    if sum(num_anchors_per_level) != len(anchors) or any(n < 0 for n in num_anchors_per_level):
        raise ValueError(
            f"num_anchors_per_level={list(num_anchors_per_level)} must be non-negative and sum "
            f"to the number of anchors ({len(anchors)})."
        )


def empty_match(num_anchors: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The answer when there is no gt or no anchor: every anchor background (0), index 0."""
    return (
        torch.zeros(num_anchors, dtype=torch.int64, device=device),
        torch.zeros(num_anchors, dtype=torch.int8, device=device),
    )


def centers_inside_gt(gt_boxes: Boxes, anchors: Boxes) -> torch.Tensor:
    """Whether each anchor centre lies inside each gt box, bounds included.

    Args:
        gt_boxes: (G, 4) XYXY.
        anchors: (N, 4) XYXY.

    Returns:
        bool (G, N).
    """
    centers = anchors.get_centers()  # (N, 2) as (x, y)
    gt = gt_boxes.tensor
    cx, cy = centers[None, :, 0], centers[None, :, 1]
    return (
        (cx >= gt[:, None, 0])
        & (cx <= gt[:, None, 2])
        & (cy >= gt[:, None, 1])
        & (cy <= gt[:, None, 3])
    )


def masked_mean_std(
    values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-wise (weighted) mean and population standard deviation over masked entries.

    Args:
        values: float (G, N).
        mask: bool (G, N), the entries that take part.
        weights: optional float (N,) weight of every column (default 1 each).

    Returns:
        mean (G,), std (G,) and a bool (G,) telling which rows had entries of positive total
        weight; the other rows get mean = std = 0.
    """
    w = mask.to(values.dtype)
    if weights is not None:
        w = w * weights[None, :]
    total = w.sum(dim=1)
    has_any = total > 0  # no entry, or only zero-weight ones
    safe_total = torch.where(has_any, total, torch.ones_like(total))
    mean = (w * values).sum(dim=1) / safe_total
    var = (w * (values - mean[:, None]) ** 2).sum(dim=1) / safe_total
    zero = torch.zeros_like(mean)
    return torch.where(has_any, mean, zero), torch.where(has_any, var.sqrt(), zero), has_any
