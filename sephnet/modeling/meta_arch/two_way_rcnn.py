"""SephGeneralizedRCNN: GeneralizedRCNN whose backbone may return two feature dicts
(docs/components.md#conventions).

::

    backbone(images) -> features                       (one dict: both stages use it)
                     -> (rpn_features, roi_features)   (two-way FPN, or an RPN-only hook)
    proposal_generator(images, rpn_features, gt) -> proposals
    roi_heads(images, roi_features, proposals, gt)

With a one-dict backbone it computes exactly what detectron2's ``GeneralizedRCNN`` does.
Only ``forward`` (training) and ``inference`` are overridden, to route the two dicts
(upstream's have no seam between the backbone and the two stages); the constructor,
``from_config``, preprocessing, postprocessing and visualisation are the parent's.
"""
from typing import Dict, List, Optional, Tuple

import torch

from sephnet.backend import (
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    Instances,
    get_event_storage,
)

__all__ = ["SephGeneralizedRCNN"]

Features = Dict[str, torch.Tensor]


@META_ARCH_REGISTRY.register()
class SephGeneralizedRCNN(GeneralizedRCNN):
    """GeneralizedRCNN routing ``(rpn_features, roi_features)`` to the two stages."""

    def _features(self, images) -> Tuple[Features, Features]:
        features = self.backbone(images.tensor)
        if isinstance(features, tuple):
            return features
        return features, features

    def _proposals(self, batched_inputs, images, features, gt_instances):
        if self.proposal_generator is not None:
            return self.proposal_generator(images, features, gt_instances)
        if "proposals" not in batched_inputs[0]:
            raise ValueError(
                "SephGeneralizedRCNN: no proposal generator and no 'proposals' in the inputs."
            )
        return [x["proposals"].to(self.device) for x in batched_inputs], {}

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """As ``GeneralizedRCNN.forward``: losses in training, ``inference`` otherwise."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = None
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        rpn_features, roi_features = self._features(images)
        proposals, proposal_losses = self._proposals(
            batched_inputs, images, rpn_features, gt_instances
        )
        _, detector_losses = self.roi_heads(images, roi_features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses = dict(detector_losses)
        losses.update(proposal_losses)
        return losses

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """As ``GeneralizedRCNN.inference``, with the RPN and ROI heads on their own dicts."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        rpn_features, roi_features = self._features(images)
        if detected_instances is None:
            proposals, _ = self._proposals(batched_inputs, images, rpn_features, None)
            results, _ = self.roi_heads(images, roi_features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(roi_features, detected_instances)
        if not do_postprocess:
            return results
        return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
