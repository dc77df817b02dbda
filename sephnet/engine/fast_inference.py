"""A faster inference model: frozen batch norm folded into convolutions, channels-last memory,
inference-only forms of sephnet's layers and detectron2's slow CPU steps, and optionally
bfloat16 autocast.

:func:`optimize_for_inference` returns a model for evaluation only (its state dict no longer
matches the checkpoint's: the folded norms are gone); ``train_net.py`` applies it to a copy of
the model when ``MODEL.SEPH.FAST_INFERENCE.ENABLED`` is set, so training is never affected::

    from sephnet.engine.fast_inference import optimize_for_inference
    fast = optimize_for_inference(model)                  # same detections (fp32)
    fast = optimize_for_inference(model, bf16=True)       # reduced precision, faster on CPUs
                                                          # with native bf16 (AVX512-BF16, AMX)

What it does, and what changes numbers:

* **folding** (always): a convolution followed by a frozen (or eval-mode) batch norm becomes one
  convolution with ``w' = w * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var +
  eps)``. Exact in real arithmetic; in float32 the summation order changes, so outputs differ in
  the last bits (boxes by far less than 0.01 px, scores by far less than 1e-4 on the models we
  measured);
* **channels-last** (``channels_last=True``): the same arithmetic in another memory order
  (oneDNN's preferred layout on CPU); again only the last bits. The ROI heads receive the
  feature maps converted back to contiguous float32 once (ROIAlign reads that layout);
* **EvoNormS0 for inference** (always): :class:`EvoNormS0Inference` computes the same formula
  in fewer memory passes (last bits only);
* **threaded ROIAlign** (always): the ROI poolers split their boxes over
  ``torch.get_num_threads()`` threads (:class:`ThreadedROIAlign`; torchvision's CPU kernel uses
  one). Bit for bit the same;
* **top-k NMS** (always): the box predictors' per-class NMS stops once their
  ``TEST.DETECTIONS_PER_IMAGE`` best detections are known
  (``sephnet.modeling.postprocessing.topk_nms.batched_nms_topk``). The same
  detections, up to the order of exactly equal scores. Applies to sephnet's predictors and to
  detectron2's own ``FastRCNNOutputLayers`` (subclasses with their own ``inference`` keep it);
* **bfloat16** (``bf16=True``): convolutions and matrix products run in bfloat16 under
  ``torch.autocast`` (8-bit mantissa); box decoding stays float32 (the backend casts deltas to
  float32), scores and masks carry bfloat16 rounding. Changes AP slightly; measure it.
"""
import copy
import logging
import types
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from sephnet.backend import (CfgNode, Conv2d, FastRCNNOutputLayers, FrozenBatchNorm2d, Instances,
                             ROIHeads, ROIPooler)
from sephnet.layers.evonorm import EvoNormS0
from sephnet.layers.evonorm_inference import EvoNormS0Inference
from sephnet.layers.threaded_roi_align import ThreadedROIAlign
from sephnet.modeling.postprocessing import DetectionNMS, fast_rcnn_inference_with
from sephnet.modeling.roi_heads.predictor.box_predictor import SephOutputLayers

__all__ = ["fold_frozen_batchnorm", "native_bf16_available", "optimize_for_inference",
           "fast_inference_model", "refuse_fast_inference"]

logger = logging.getLogger(__name__)


def _batchnorm_scale_shift(norm: nn.Module):
    """(scale, shift) with ``norm(x) == x * scale + shift`` per channel, for a frozen BN or an
    eval-mode ``nn.BatchNorm2d``; None for anything else."""
    if isinstance(norm, FrozenBatchNorm2d) or (
            isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.track_running_stats):
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        scale = weight / torch.sqrt(norm.running_var + norm.eps)
        return scale, bias - norm.running_mean * scale
    return None


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d`` (the backend's wrapper) whose ``norm`` is a frozen or eval-mode
    batch norm into one biased convolution, in place; returns how many were folded.

    Each folded conv keeps its ``activation``; its ``norm`` becomes None.
    """
    folded = 0
    for module in model.modules():
        if not isinstance(module, Conv2d) or module.norm is None:
            continue
        affine = _batchnorm_scale_shift(module.norm)
        if affine is None:
            continue
        scale, shift = (t.to(module.weight.dtype) for t in affine)
        module.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = shift if module.bias is None else module.bias * scale + shift
        module.bias = nn.Parameter(bias, requires_grad=False)
        module.norm = None
        folded += 1
    return folded


def native_bf16_available() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


class _Bf16Autocast(nn.Module):
    """Runs the wrapped detector under bfloat16 autocast (device type from its parameters)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.device_type = next(model.parameters()).device.type

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(batched_inputs)


def _pooling_layout(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of ROI heads: their feature maps (``features``, a dict of
    ``Tensor[N, C, H, W]``, second argument) as contiguous float32, converted once here rather
    than inside every ROIAlign call (which reads NCHW float32: channels-last or bfloat16 maps
    would otherwise be converted by the box pooler and again by the mask pooler)."""
    def pooling_form(features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {k: v.float().contiguous() for k, v in features.items()}

    if "features" in kwargs:
        return args, {**kwargs, "features": pooling_form(kwargs["features"])}
    if len(args) > 1:
        return (args[0], pooling_form(args[1]), *args[2:]), kwargs
    return None


def _evonorm_for_inference(model: nn.Module) -> int:
    """Replace every ``EvoNormS0`` with :class:`EvoNormS0Inference` (same parameters; fewer
    memory passes without gradients); returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is EvoNormS0:
                setattr(parent, name, EvoNormS0Inference.from_module(child))
                replaced += 1
    return replaced


def _thread_pooling(model: nn.Module) -> int:
    """Wrap every ROI pooler's per-level ROIAligns in :class:`ThreadedROIAlign` (same output,
    boxes split over the threads); returns how many poolers were changed."""
    poolers = [m for m in model.modules() if isinstance(m, ROIPooler)]
    for pooler in poolers:
        pooler.level_poolers = nn.ModuleList(
            ThreadedROIAlign(level) for level in pooler.level_poolers)
    return len(poolers)


def _select_detections_topk(predictor: SephOutputLayers, boxes: List[torch.Tensor],
                            scores: List[torch.Tensor],
                            image_shapes) -> Tuple[List[Instances], List[torch.Tensor]]:
    """``SephOutputLayers.select_detections`` through ``fast_rcnn_inference_with``, whose NMS
    stops once the ``test_topk_per_image`` best detections are known."""
    return fast_rcnn_inference_with(predictor.test_nms, boxes, scores, image_shapes,
                                    predictor.test_score_thresh, predictor.test_nms_thresh,
                                    predictor.test_topk_per_image)


def _inference_topk(predictor: FastRCNNOutputLayers, predictions, proposals: List[Instances]):
    """``FastRCNNOutputLayers.inference`` with the same top-k NMS (as detectron2's plain NMS)."""
    return fast_rcnn_inference_with(
        DetectionNMS(), predictor.predict_boxes(predictions, proposals),
        predictor.predict_probs(predictions, proposals), [p.image_size for p in proposals],
        predictor.test_score_thresh, predictor.test_nms_thresh, predictor.test_topk_per_image)


def _stop_nms_at_topk(model: nn.Module) -> int:
    """Give the box predictors the top-k NMS (module docstring); returns how many predictors
    were changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, SephOutputLayers):
            module.select_detections = types.MethodType(_select_detections_topk, module)
        elif (isinstance(module, FastRCNNOutputLayers)
              and type(module).inference is FastRCNNOutputLayers.inference):
            module.inference = types.MethodType(_inference_topk, module)
        else:
            continue
        changed += 1
    return changed


def optimize_for_inference(model: nn.Module, channels_last: bool = True,
                           bf16: bool = False) -> nn.Module:
    """The fast inference form of ``model`` (modified in place and returned, in eval mode;
    wrapped when ``bf16``). Copy the model first if it is still needed as it was."""
    model.eval()
    folded = fold_frozen_batchnorm(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if channels_last or bf16:
        for module in model.modules():
            if isinstance(module, ROIHeads):
                module.register_forward_pre_hook(_pooling_layout, with_kwargs=True)
    evonorms = _evonorm_for_inference(model)
    pooling, predictors = _thread_pooling(model), _stop_nms_at_topk(model)
    logger.info("Fast inference: %d conv+BN pairs folded, channels-last %s, bf16 %s, %d "
                "EvoNormS0 for inference, %d ROI poolers threaded, %d box predictors with top-k "
                "NMS.", folded, "on" if channels_last else "off", "on" if bf16 else "off",
                evonorms, pooling, predictors)
    if bf16:
        if not native_bf16_available() and next(model.parameters()).device.type == "cpu":
            logger.warning("bf16 inference on a CPU without native bfloat16 (AVX512-BF16/AMX) "
                           "is emulated and usually slower than float32.")
        return _Bf16Autocast(model)
    return model


def fast_inference_model(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """``model`` itself when ``MODEL.SEPH.FAST_INFERENCE.ENABLED`` is off, else the fast form of
    a deep copy of it (the given model is left untouched, e.g. for further training)."""
    node = cfg.MODEL.SEPH.FAST_INFERENCE
    if not node.ENABLED:
        return model
    return optimize_for_inference(copy.deepcopy(model), channels_last=node.CHANNELS_LAST,
                                  bf16=node.BF16)


def refuse_fast_inference(cfg: CfgNode, tool: str, why: str) -> None:
    """For tools that do not evaluate through the fast path: a one-line ``ValueError`` when
    ``MODEL.SEPH.FAST_INFERENCE.ENABLED`` is set, rather than silently ignoring it.

    Args:
        tool: the tool's name, for the message; why: what it does instead.
    """
    if cfg.MODEL.SEPH.FAST_INFERENCE.ENABLED:
        raise ValueError(f"MODEL.SEPH.FAST_INFERENCE.ENABLED is True, but {tool} {why}; "
                         "drop the key.")
