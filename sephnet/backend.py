"""The one place where sephnet chooses its framework.

sephnet has one API and two backends (the README's "One API, two backends"):

* ``"detectron2"``: the real library, used whenever ``import detectron2`` works;
* ``"core"``: sephnet's portable implementation of the detectron2 subset it uses,
  the package ``sephnet.d2``, whose import paths mirror detectron2's.

The environment variable ``SEPHNET_BACKEND`` (``auto`` by default, ``detectron2`` or
``core``) forces a choice. Every other sephnet module takes framework names from
here, never from ``detectron2`` or ``sephnet.d2`` directly::

    from sephnet.backend import Boxes, ROI_HEADS_REGISTRY, configurable
    from sephnet.backend import comm, modeling

Names resolve lazily (PEP 562 ``__getattr__``), so importing this module is cheap and
a name is imported from the backend on first use.
"""
import importlib
import importlib.util
import logging
import os
from types import ModuleType
from typing import Dict, Tuple

__all__ = ["BACKEND", "ROOT", "describe", "choose_backend"]

ENV_VAR = "SEPHNET_BACKEND"
_CHOICES = ("auto", "detectron2", "core")
_ROOTS = {"detectron2": "detectron2", "core": "sephnet.d2"}

logger = logging.getLogger(__name__)


class BackendError(ImportError):
    """The requested backend cannot be used."""


def _detectron2_import_error() -> Exception:
    """Return why ``import detectron2`` fails, or ``None`` when it works."""
    if importlib.util.find_spec("detectron2") is None:
        return ModuleNotFoundError("No module named 'detectron2'")
    try:
        importlib.import_module("detectron2")
    except Exception as e:  # a broken build raises more than ImportError
        return e
    return None


def choose_backend(requested: str) -> str:
    """Map a ``SEPHNET_BACKEND`` value to the backend to use.

    Args:
        requested: ``"auto"``, ``"detectron2"`` or ``"core"`` (case-insensitive; empty
            means ``"auto"``).

    Returns:
        ``"detectron2"`` or ``"core"``.

    Raises:
        ValueError: ``requested`` is not one of the choices.
        BackendError: ``"detectron2"`` was forced but it cannot be imported.
    """
    value = (requested or "auto").strip().lower()
    if value not in _CHOICES:
        raise ValueError(
            f"{ENV_VAR}={requested!r} is not valid; expected one of {', '.join(_CHOICES)}."
        )
    if value == "core":
        return "core"
    error = _detectron2_import_error()
    if value == "detectron2" and error is not None:
        raise BackendError(
            f"{ENV_VAR}=detectron2 but detectron2 cannot be imported ({error}). "
            "Install detectron2 (see https://detectron2.readthedocs.io/en/latest/tutorials/"
            f"install.html), or unset {ENV_VAR} (or set it to 'core') to use sephnet's "
            "portable core."
        )
    return "detectron2" if error is None else "core"


BACKEND: str = choose_backend(os.environ.get(ENV_VAR, "auto"))
ROOT: str = _ROOTS[BACKEND]

# Submodules re-exported as names, e.g. ``from sephnet.backend import comm``.
_MODULES: Dict[str, str] = {
    "config": "config",
    "structures": "structures",
    "layers": "layers",
    "modeling": "modeling",
    "data": "data",
    "transforms": "data.transforms",
    "detection_utils": "data.detection_utils",
    "engine": "engine",
    "hooks": "engine.hooks",
    "evaluation": "evaluation",
    "checkpoint": "checkpoint",
    "solver": "solver",
    "comm": "utils.comm",
    "events": "utils.events",
    "registry": "utils.registry",
}

# Contract names (ARCHITECTURE.md section 3) and the backend submodule holding each; the
# two private helpers (leading underscore) are detectron2 v0.6's, reused as they are.
_NAME_GROUPS: Tuple[Tuple[str, str], ...] = (
    ("config", "CfgNode get_cfg configurable"),
    ("structures", "Boxes BoxMode Instances ImageList BitMasks PolygonMasks pairwise_iou pairwise_ioa"),
    (
        "layers",
        "ShapeSpec Conv2d get_norm FrozenBatchNorm2d NaiveSyncBatchNorm CNNBlockBase cat "
        "nonzero_tuple nms batched_nms ROIAlign roi_align paste_masks_in_image move_device_like "
        "DeformConv ModulatedDeformConv CycleBatchNormList",
    ),
    (
        "modeling",
        "META_ARCH_REGISTRY BACKBONE_REGISTRY PROPOSAL_GENERATOR_REGISTRY RPN_HEAD_REGISTRY "
        "ANCHOR_GENERATOR_REGISTRY ROI_HEADS_REGISTRY ROI_BOX_HEAD_REGISTRY ROI_MASK_HEAD_REGISTRY "
        "build_model build_backbone build_proposal_generator build_anchor_generator "
        "build_roi_heads build_box_head build_mask_head GeneralizedRCNN ProposalNetwork "
        "Backbone ResNet FPN build_resnet_backbone detector_postprocess "
        "FastRCNNOutputLayers ROIHeads StandardROIHeads GeneralizedRCNNWithTTA DatasetMapperTTA "
        "RetinaNet",
    ),
    ("modeling.backbone.resnet", "BottleneckBlock DeformBottleneckBlock BasicBlock BasicStem"),
    ("modeling.meta_arch", "DenseDetector"),
    ("modeling.meta_arch.retinanet", "RetinaNetHead"),
    ("modeling.meta_arch.dense_detector", "permute_to_N_HWA_K"),
    ("modeling.meta_arch.fcos", "FCOS FCOSHead"),
    ("modeling.anchor_generator", "DefaultAnchorGenerator"),
    ("modeling.box_regression", "Box2BoxTransform _dense_box_regression_loss Box2BoxTransformLinear"),
    ("modeling.matcher", "Matcher"),
    ("modeling.poolers", "ROIPooler assign_boxes_to_levels"),
    ("modeling.proposal_generator", "RPN StandardRPNHead"),
    (
        "modeling.roi_heads",
        "Res5ROIHeads CascadeROIHeads FastRCNNConvFCHead MaskRCNNConvUpsampleHead",
    ),
    ("modeling.backbone.fpn", "LastLevelMaxPool LastLevelP6P7 build_resnet_fpn_backbone"),
    ("modeling.sampling", "subsample_labels"),
    (
        "modeling.proposal_generator.proposal_utils",
        "find_top_rpn_proposals add_ground_truth_to_proposals",
    ),
    ("modeling.roi_heads.fast_rcnn", "fast_rcnn_inference _log_classification_stats"),
    ("structures.boxes", "matched_pairwise_iou"),
    ("modeling.roi_heads.mask_head", "mask_rcnn_loss mask_rcnn_inference"),
    (
        "data",
        "DatasetCatalog MetadataCatalog DatasetMapper build_detection_train_loader "
        "build_detection_test_loader",
    ),
    ("data.datasets", "register_coco_instances load_coco_json"),
    ("data.samplers", "TrainingSampler InferenceSampler"),
    (
        "engine",
        "SimpleTrainer AMPTrainer HookBase DefaultTrainer DefaultPredictor "
        "default_argument_parser default_setup default_writers launch",
    ),
    (
        "evaluation",
        "DatasetEvaluator DatasetEvaluators COCOEvaluator inference_on_dataset "
        "print_csv_format verify_results",
    ),
    ("checkpoint", "DetectionCheckpointer"),
    ("solver", "build_optimizer build_lr_scheduler"),
    ("utils.events", "EventStorage get_event_storage CommonMetricPrinter JSONWriter TensorboardXWriter"),
    ("utils.logger", "setup_logger"),
    ("utils.registry", "Registry"),
)
_NAMES: Dict[str, str] = {
    name: module for module, names in _NAME_GROUPS for name in names.split()
}


def __getattr__(name: str):
    """Resolve a framework name or submodule from the chosen backend on first use."""
    if name in _MODULES:
        value = importlib.import_module(f"{ROOT}.{_MODULES[name]}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(f"{ROOT}.{_NAMES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULES) | set(_NAMES))


def import_module(path: str) -> ModuleType:
    """Import ``<backend root>.<path>``, e.g. ``import_module("modeling.poolers")``.

    For the few names outside the table above; sephnet code uses this rather than
    spelling out ``detectron2`` or ``sephnet.d2``.
    """
    return importlib.import_module(f"{ROOT}.{path}")


def describe() -> str:
    """One line naming the backend and where it was imported from."""
    module = importlib.import_module(ROOT)
    version = getattr(module, "__version__", "unknown")
    return f"sephnet backend: {BACKEND} ({ROOT} {version}, {os.path.dirname(module.__file__)})"


logger.info("sephnet backend: %s (%s=%r)", BACKEND, ENV_VAR, os.environ.get(ENV_VAR, "auto"))
