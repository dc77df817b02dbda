"""SephGeneralizedRCNN: GeneralizedRCNN whose backbone may return two feature dicts
(docs/components.md#conventions).

::

    backbone(images) -> features                       (one dict: both stages use it)
                     -> (rpn_features, roi_features)   (two-way FPN, or an RPN-only hook)
    proposal_generator(images, rpn_features, gt) -> proposals
    roi_heads(images, roi_features, proposals, gt)

detectron2's ``GeneralizedRCNN`` hands the backbone's one output to both stages, with no
method in between to override. Instead of copying its ``forward`` and ``inference``, this
class adds two module hooks at construction:

- a forward hook on the backbone turns a ``(rpn_features, roi_features)`` pair into
  :class:`RoutedFeatures`: the ROI heads' dict, carrying the RPN's dict as ``.rpn``;
- a forward pre-hook on the proposal generator hands it that ``.rpn`` dict.

Everything else (training and inference forward, ``forward_with_given_boxes``,
preprocessing, postprocessing, visualisation, ``from_config``) is the parent's, so with a
one-dict backbone it computes exactly what ``GeneralizedRCNN`` does, and the state-dict
keys are the parent's.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from sephnet.backend import META_ARCH_REGISTRY, GeneralizedRCNN, configurable

__all__ = ["RoutedFeatures", "SephGeneralizedRCNN"]

Features = Dict[str, torch.Tensor]


class RoutedFeatures(dict):
    """The ROI heads' features (name -> ``Tensor[N, C, H_l, W_l]``) with the proposal
    generator's own dict (same keys and shapes) as ``rpn``."""

    def __init__(self, roi: Features, rpn: Features):
        super().__init__(roi)
        self.rpn = rpn


def _route_backbone_pair(module: nn.Module, inputs, output) -> Optional[RoutedFeatures]:
    """Backbone forward hook: ``(rpn, roi)`` -> ``RoutedFeatures(roi, rpn)``; a single
    dict passes unchanged (None keeps the output)."""
    if isinstance(output, tuple):
        rpn, roi = output
        return RoutedFeatures(roi, rpn)
    return None


def _rpn_input(module: nn.Module, args: Tuple) -> Optional[Tuple]:
    """Proposal-generator forward pre-hook: ``(images, features, gt)`` with the RPN's dict
    in place of ``RoutedFeatures``."""
    if isinstance(args[1], RoutedFeatures):
        return (args[0], args[1].rpn) + tuple(args[2:])
    return None


@META_ARCH_REGISTRY.register()
class SephGeneralizedRCNN(GeneralizedRCNN):
    """GeneralizedRCNN routing ``(rpn_features, roi_features)`` to the two stages; takes
    ``GeneralizedRCNN``'s arguments."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.backbone.register_forward_hook(_route_backbone_pair)
        if self.proposal_generator is not None:
            self.proposal_generator.register_forward_pre_hook(_rpn_input)
