"""Optimizer and LR-scheduler factories (detectron2.solver.build).

``build_optimizer(cfg, model)`` makes SGD over parameter groups from
:func:`get_default_optimizer_params` (per-group LR / weight decay for norm layers and
biases), optionally with per-parameter gradient clipping (``SOLVER.CLIP_GRADIENTS``).
``build_lr_scheduler(cfg, optimizer)`` makes an :class:`LRMultiplier` over a warmup +
multi-step or cosine fvcore schedule.
"""
import logging
from collections import defaultdict
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Set, Type, Union

import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

from .lr_scheduler import LRMultiplier, WarmupParamScheduler

if TYPE_CHECKING:
    from sephnet.d2.config import CfgNode

__all__ = [
    "GradientClipType",
    "maybe_add_gradient_clipping",
    "build_optimizer",
    "get_default_optimizer_params",
    "reduce_param_groups",
    "build_lr_scheduler",
]

_GradientClipperInput = Union[torch.Tensor, Iterable[torch.Tensor]]
_GradientClipper = Callable[[_GradientClipperInput], None]

# Layers whose parameters get SOLVER.WEIGHT_DECAY_NORM. NaiveSyncBatchNorm and
# FrozenBatchNorm2d need no entry: the first subclasses BatchNorm2d, the second has no
# trainable parameters.
_NORM_MODULE_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


class GradientClipType(Enum):
    """Values of ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE``."""

    VALUE = "value"
    NORM = "norm"


def _create_gradient_clipper(clip_cfg: "CfgNode") -> _GradientClipper:
    """Return a function clipping the gradient of the tensor(s) it is given.

    Args:
        clip_cfg: the ``SOLVER.CLIP_GRADIENTS`` node (CLIP_TYPE, CLIP_VALUE, NORM_TYPE).

    Raises:
        ValueError: CLIP_TYPE is neither ``"value"`` nor ``"norm"``.
    """
    try:
        clip_type = GradientClipType(clip_cfg.CLIP_TYPE)
    except ValueError:
        choices = [t.value for t in GradientClipType]
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip_cfg.CLIP_TYPE!r}; expected one of {choices}."
        ) from None
    clip_value = float(clip_cfg.CLIP_VALUE)
    norm_type = float(clip_cfg.NORM_TYPE)
    if clip_type is GradientClipType.VALUE:
        return lambda p: torch.nn.utils.clip_grad_value_(p, clip_value)
    return lambda p: torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)


def _optimizer_class_with_clipping(
    optimizer: Type[torch.optim.Optimizer], clipper: _GradientClipper
) -> Type[torch.optim.Optimizer]:
    """A subclass of ``optimizer`` whose ``step`` first clips each parameter's gradient.

    Clipping is per parameter tensor (each tensor's gradient is clipped on its own, also
    for the ``"norm"`` type), as in detectron2.
    """

    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                clipper(param)
        return super(clipped, self).step(closure)

    clipped = type(optimizer.__name__ + "WithGradientClip", (optimizer,), {"step": step})
    return clipped


def maybe_add_gradient_clipping(
    cfg: "CfgNode", optimizer: Union[Type[torch.optim.Optimizer], torch.optim.Optimizer]
) -> Union[Type[torch.optim.Optimizer], torch.optim.Optimizer]:
    """Add gradient clipping to an optimizer class (or instance) if the config enables it.

    Args:
        cfg: full config; reads ``SOLVER.CLIP_GRADIENTS.{ENABLED,CLIP_TYPE,CLIP_VALUE,
            NORM_TYPE}``.
        optimizer: an optimizer class, or an optimizer instance (its class is swapped in
            place for the clipping subclass).

    Returns:
        ``optimizer`` unchanged when clipping is disabled, else the clipping class (or the
        same instance, now of the clipping class).

    Raises:
        TypeError: ``optimizer`` is neither an optimizer class nor an instance.
    """
    if not cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
        return optimizer
    if isinstance(optimizer, torch.optim.Optimizer):
        base = type(optimizer)
    elif isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        base = optimizer
    else:
        raise TypeError(
            f"maybe_add_gradient_clipping expects a torch.optim.Optimizer class or instance, "
            f"got {optimizer!r}."
        )
    clipped = _optimizer_class_with_clipping(base, _create_gradient_clipper(cfg.SOLVER.CLIP_GRADIENTS))
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.__class__ = clipped
        return optimizer
    return clipped


def build_optimizer(cfg: "CfgNode", model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD over ``model``'s trainable parameters, configured by ``cfg.SOLVER``.

    Reads BASE_LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, WEIGHT_DECAY_NORM, BIAS_LR_FACTOR,
    WEIGHT_DECAY_BIAS and CLIP_GRADIENTS.
    """
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    sgd = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    return sgd(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


def get_default_optimizer_params(
    model: torch.nn.Module,
    base_lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    weight_decay_norm: Optional[float] = None,
    bias_lr_factor: Optional[float] = 1.0,
    weight_decay_bias: Optional[float] = None,
    overrides: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """Parameter groups with per-parameter hyper-parameters, merged where equal.

    Every trainable parameter (each counted once, even if shared) starts from
    ``{"lr": base_lr, "weight_decay": weight_decay}`` (keys omitted when ``None``, so the
    optimizer's defaults apply). Parameters owned directly by a normalization layer
    (BatchNorm*, SyncBatchNorm, GroupNorm, InstanceNorm*, LayerNorm, LocalResponseNorm) get
    ``weight_decay_norm`` when it is not ``None``. Then ``overrides[name]`` is applied,
    where ``name`` is the parameter's own attribute name (e.g. ``"bias"``); the bias
    arguments are a shortcut for ``overrides["bias"]``.

    Args:
        model: the model to optimize.
        base_lr: default LR.
        weight_decay: default weight decay.
        weight_decay_norm: weight decay of normalization-layer parameters.
        bias_lr_factor: LR multiplier of parameters named ``bias`` (needs ``base_lr``).
        weight_decay_bias: weight decay of parameters named ``bias``.
        overrides: ``{param_attr_name: {"lr": ..., "weight_decay": ...}}``; not mutated.

    Returns:
        a list of ``{"params": [Parameter, ...], <hyper-parameters>}`` dicts, one per
        distinct hyper-parameter combination, in first-seen order.

    Raises:
        ValueError: ``bias_lr_factor`` without ``base_lr``, or both bias arguments and
            ``overrides["bias"]``.
    """
    overrides = dict(overrides or {})
    defaults: Dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_hparams: Dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError(f"bias_lr_factor={bias_lr_factor} needs base_lr, which is None.")
        bias_hparams["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_hparams["weight_decay"] = weight_decay_bias
    if bias_hparams:
        if "bias" in overrides:
            raise ValueError(
                "overrides['bias'] conflicts with bias_lr_factor/weight_decay_bias; give one."
            )
        overrides["bias"] = bias_hparams

    groups: List[Dict[str, Any]] = []
    seen: Set[torch.nn.Parameter] = set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_MODULE_TYPES)
        for attr, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            hparams = dict(defaults)
            if is_norm and weight_decay_norm is not None:
                hparams["weight_decay"] = weight_decay_norm
            hparams.update(overrides.get(attr, {}))
            groups.append({"params": [param], **hparams})
    return reduce_param_groups(groups)


def _expand_param_groups(params: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One dict per parameter; a later group's settings win for a repeated parameter."""
    per_param: Dict[torch.nn.Parameter, Dict[str, Any]] = defaultdict(dict)
    for group in params:
        if "params" not in group:
            raise ValueError(f"A parameter group has no 'params' key: {sorted(group)}.")
        hparams = {k: v for k, v in group.items() if k != "params"}
        for param in group["params"]:
            per_param[param].update(hparams)
            per_param[param]["params"] = [param]
    return list(per_param.values())


def reduce_param_groups(params: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Merge parameter groups that share identical hyper-parameters.

    Fewer groups keep PyTorch's multi-tensor optimizer kernels efficient. Group order is
    the order in which each hyper-parameter combination is first seen; parameters keep
    their relative order inside a group.
    """
    merged: Dict[tuple, List[torch.nn.Parameter]] = {}
    for group in _expand_param_groups(params):
        key = tuple((k, v) for k, v in group.items() if k != "params")
        merged.setdefault(key, []).extend(group["params"])
    return [{**dict(key), "params": plist} for key, plist in merged.items()]


def build_lr_scheduler(
    cfg: "CfgNode", optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler._LRScheduler:
    """The LR schedule of ``cfg.SOLVER`` as an :class:`LRMultiplier`.

    ``SOLVER.LR_SCHEDULER_NAME``:

    * ``"WarmupMultiStepLR"``: multiplier ``GAMMA ** k`` after the k-th of ``STEPS``;
      steps beyond ``MAX_ITER`` are dropped with a warning.
    * ``"WarmupCosineLR"``: half cosine from 1 to ``BASE_LR_END / BASE_LR`` over
      ``MAX_ITER`` (``BASE_LR_END`` is optional and 0 when absent, detectron2 v0.6's end
      value).

    Both start with a warmup of ``WARMUP_ITERS`` iterations (capped at MAX_ITER) of
    ``WARMUP_METHOD`` from ``WARMUP_FACTOR``.

    Raises:
        ValueError: unknown LR_SCHEDULER_NAME or WARMUP_METHOD.
    """
    solver = cfg.SOLVER
    name = solver.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if s <= solver.MAX_ITER]
        if len(steps) != len(solver.STEPS):
            logging.getLogger(__name__).warning(
                "SOLVER.STEPS %s has values beyond SOLVER.MAX_ITER=%d; they are ignored.",
                list(solver.STEPS),
                solver.MAX_ITER,
            )
        sched = MultiStepParamScheduler(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=solver.MAX_ITER,
        )
    elif name == "WarmupCosineLR":
        end_value = solver.get("BASE_LR_END", 0.0) / solver.BASE_LR
        sched = CosineParamScheduler(1.0, end_value)
    else:
        raise ValueError(
            f"Unknown SOLVER.LR_SCHEDULER_NAME={name!r}; expected 'WarmupMultiStepLR' or "
            "'WarmupCosineLR'."
        )
    sched = WarmupParamScheduler(
        sched,
        solver.WARMUP_FACTOR,
        min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0),
        solver.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=solver.MAX_ITER)
