"""R-CNN meta-architectures: ``GeneralizedRCNN`` (backbone -> proposals -> ROI heads) and
``ProposalNetwork`` (backbone -> proposals only), with detectron2 v0.6's interface.

Model input (one dict per image, as produced by ``DatasetMapper``):
    "image": (C, H, W) tensor in ``INPUT.FORMAT`` channel order, pixel values 0-255;
    "instances" (training): ``Instances`` with ``gt_boxes``, ``gt_classes`` (and ``gt_masks``);
    "proposals" (optional): precomputed ``Instances`` when there is no proposal generator;
    "height", "width" (optional): the resolution the outputs must be reported in.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from sephnet.d2.config import configurable
from sephnet.d2.modeling.backbone import Backbone, build_backbone
from sephnet.d2.modeling.postprocessing import detector_postprocess
from sephnet.d2.modeling.proposal_generator import build_proposal_generator
from sephnet.d2.modeling.roi_heads import build_roi_heads
from sephnet.d2.structures import ImageList, Instances
from sephnet.d2.utils.events import get_event_storage

from .build import META_ARCH_REGISTRY

__all__ = ["GeneralizedRCNN", "ProposalNetwork"]

logger = logging.getLogger(__name__)

_MAX_VISUALIZED_PROPOSALS = 20


def _pixel_buffers(module: nn.Module, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
    """Register ``pixel_mean``/``pixel_std`` as (C, 1, 1) non-persistent buffers (not in the
    state_dict, like detectron2), after checking they have the same length."""
    if len(pixel_mean) != len(pixel_std):
        raise ValueError(
            f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} have different "
            "shapes! (MODEL.PIXEL_MEAN / MODEL.PIXEL_STD)"
        )
    module.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
    module.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)


def _normalized_batch(model: nn.Module, batched_inputs: Sequence[Dict]) -> ImageList:
    """Normalise every "image" by the model's pixel mean/std and pad them into one batch whose
    height and width are divisible by ``model.backbone.size_divisibility``."""
    images = [
        (x["image"].to(model.pixel_mean.device) - model.pixel_mean) / model.pixel_std
        for x in batched_inputs
    ]
    return ImageList.from_tensors(images, model.backbone.size_divisibility)


def _rescale_outputs(
    per_image: Sequence[Instances],
    batched_inputs: Sequence[Dict],
    image_sizes: Sequence[Tuple[int, int]],
    key: str,
) -> List[Dict[str, Instances]]:
    """Map each image's outputs to its requested "height"/"width" (default: the size the
    network saw) with :func:`detector_postprocess`; returns [{key: Instances}, ...]."""
    outputs = []
    for instances, inputs, (height, width) in zip(per_image, batched_inputs, image_sizes):
        out_h = inputs.get("height", height)
        out_w = inputs.get("width", width)
        outputs.append({key: detector_postprocess(instances, out_h, out_w)})
    return outputs


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """Two-stage detector: per-image features, region proposals, per-region predictions.

    Topology::

        images ─► normalise, pad to size_divisibility ─► backbone ─► features
        features ─► proposal_generator (or input "proposals") ─► proposals
        features + proposals ─► roi_heads ─► training: losses | inference: Instances
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: Optional[nn.Module],
        roi_heads: nn.Module,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        input_format: Optional[str] = None,
        vis_period: int = 0,
    ):
        """
        Args:
            backbone: feature extractor following the ``Backbone`` interface
                (``size_divisibility``, ``output_shape()``).
            proposal_generator: module called as ``(images, features, gt_instances)`` returning
                ``(proposals, losses)``; None to read precomputed "proposals" from the inputs.
            roi_heads: module called as ``(images, features, proposals, gt_instances)``.
            pixel_mean, pixel_std: per-channel normalisation, one value per input channel.
            input_format: channel order of input images (e.g. "BGR"); needed to visualise.
            vis_period: visualise gt boxes and proposals every this many iterations (0 = never).

        Raises:
            ValueError: if mean and std lengths differ, or vis_period > 0 without input_format.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.vis_period = vis_period
        if vis_period > 0 and input_format is None:
            raise ValueError("input_format is required for visualization! (vis_period > 0)")
        _pixel_buffers(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(cfg, backbone.output_shape()),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def visualize_training(self, batched_inputs: List[Dict], proposals: List[Instances]) -> None:
        """Put one image into the event storage: its gt boxes (left) beside its top-20
        proposals (right). Only the first image of the batch is drawn."""
        from sephnet.d2.data.detection_utils import convert_image_to_rgb
        from sephnet.d2.utils.visualizer import Visualizer

        storage = get_event_storage()
        inputs, props = batched_inputs[0], proposals[0]
        image = convert_image_to_rgb(inputs["image"].permute(1, 2, 0), self.input_format)
        gt_panel = Visualizer(image, None).overlay_instances(boxes=inputs["instances"].gt_boxes)
        shown = props.proposal_boxes[:_MAX_VISUALIZED_PROPOSALS].tensor.cpu().numpy()
        proposal_panel = Visualizer(image, None).overlay_instances(boxes=shown)
        both = np.concatenate((gt_panel.get_image(), proposal_panel.get_image()), axis=1)
        storage.put_image(
            "left: ground-truth boxes, right: top proposals", both.transpose(2, 0, 1)
        )

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """
        Args:
            batched_inputs: N per-image dicts (see the module docstring).

        Returns:
            Training: dict of scalar losses (ROI-head losses, then proposal losses); needs an
            ``EventStorage``. Inference: same as :meth:`inference`.
        """
        if not self.training:
            return self.inference(batched_inputs)

        images = self.preprocess_image(batched_inputs)
        gt_instances = None
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)

        if self.proposal_generator is not None:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals = self._precomputed_proposals(batched_inputs)
            proposal_losses = {}

        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
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
        """Run the detector in eval mode.

        Args:
            batched_inputs: N per-image dicts (see the module docstring).
            detected_instances: optional N ``Instances`` with ``pred_boxes`` and
                ``pred_classes``; when given, box detection is skipped and only the other
                per-ROI outputs (e.g. masks) are predicted for these boxes.
            do_postprocess: rescale outputs to each input's "height"/"width".

        Returns:
            With ``do_postprocess``: N dicts {"instances": Instances} with ``pred_boxes``,
            ``scores``, ``pred_classes`` (and bool ``pred_masks`` (R, H, W)) in output
            coordinates. Otherwise N raw ``Instances`` in network-input coordinates.

        Raises:
            RuntimeError: if called in training mode.
        """
        if self.training:
            raise RuntimeError("GeneralizedRCNN.inference must be called in eval mode")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)

        if detected_instances is None:
            if self.proposal_generator is not None:
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals = self._precomputed_proposals(batched_inputs)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            given = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, given)

        if not do_postprocess:
            return results
        return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)

    def _precomputed_proposals(self, batched_inputs: List[Dict]) -> List[Instances]:
        if "proposals" not in batched_inputs[0]:
            raise KeyError(
                "The model has no proposal generator (MODEL.PROPOSAL_GENERATOR.NAME = "
                "'PrecomputedProposals'), so every input needs a 'proposals' entry"
            )
        return [x["proposals"].to(self.device) for x in batched_inputs]

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalise each "image" by pixel mean/std and pad them into one batch whose size is
        divisible by ``backbone.size_divisibility``."""
        return _normalized_batch(self, batched_inputs)

    @staticmethod
    def _postprocess(
        instances: List[Instances],
        batched_inputs: List[Dict[str, torch.Tensor]],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Dict[str, Instances]]:
        """Rescale raw per-image outputs to each input's "height"/"width"."""
        return _rescale_outputs(instances, batched_inputs, image_sizes, "instances")


@META_ARCH_REGISTRY.register()
class ProposalNetwork(nn.Module):
    """Proposal-only model: backbone + proposal generator.

    Training returns the proposal losses; inference returns N dicts {"proposals": Instances}
    with ``proposal_boxes`` and ``objectness_logits`` in output coordinates.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
    ):
        """
        Args:
            backbone: feature extractor following the ``Backbone`` interface.
            proposal_generator: module called as ``(images, features, gt_instances)``.
            pixel_mean, pixel_std: per-channel normalisation, one value per input channel.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        _pixel_buffers(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """
        Args:
            batched_inputs: N per-image dicts; ground truth under "instances" (the legacy key
                "targets" is accepted with a warning).

        Returns:
            Training: the proposal loss dict. Inference: N dicts {"proposals": Instances}.
        """
        images = _normalized_batch(self, batched_inputs)
        features = self.backbone(images.tensor)

        gt_instances = None
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        elif "targets" in batched_inputs[0]:
            logger.warning("The input key 'targets' is called 'instances' now.")
            gt_instances = [x["targets"].to(self.device) for x in batched_inputs]

        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        if self.training:
            return proposal_losses
        return _rescale_outputs(proposals, batched_inputs, images.image_sizes, "proposals")
