"""RPN anchor matchers of the ATSS family (docs/components.md#anchors-and-rpn); importing this
package registers them. See :mod:`sephnet.modeling.matchers.base` for the contract every anchor
matcher follows.

:class:`HungarianMatcher` is DETR's set matcher (one prediction per target; docs/detr.md).
"""
from sephnet.modeling.matchers.base import build_anchor_matcher
from sephnet.modeling.matchers.atss import ATSSMatcher, ATSSMatcherPreFix
from sephnet.modeling.matchers.iou_statistics import (
    ATSSMatcher3,
    ATSSMatcher4,
    DynamicMatcher,
    IoUStatisticsMatcher,
)
from sephnet.modeling.matchers.hungarian import HungarianMatcher

__all__ = [
    "build_anchor_matcher",
    "ATSSMatcher",
    "ATSSMatcherPreFix",
    "IoUStatisticsMatcher",
    "ATSSMatcher3",
    "ATSSMatcher4",
    "DynamicMatcher",
    "HungarianMatcher",
]
