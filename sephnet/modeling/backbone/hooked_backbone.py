"""A ``Backbone`` composing bottom-up, optional extra levels, a neck and backbone hooks.

::

    image -> bottom_up (ResNet; or a whole detectron2 FPN) -> {res2..res5}
          -> extra levels (res6.. = conv3x3/2 + norm chain on res5; the log's MAKE_C6C7)
          -> before hook (docs/components.md#backbone-hooks; e.g. NonLocal, SE on res4+)
          -> neck (TFStyleFPN, BiFPN or TwoWayFPN; none when bottom_up is already an FPN)
          -> after hook (on the neck outputs, e.g. Fusion adding "f3", Balance)   -> ROI heads
          -> RPN hook (on a copy the RPN alone sees, e.g. Balance V1)             -> RPN

Contract (STYLE.md "Fusion wrapper"): ``output_shape()`` declares exactly the dict the ROI
heads receive, keys, channels and strides (the hooks' declared shapes, including a fusion
hook's ``f3`` and balance V2's doubled channels); ``size_divisibility`` is the largest of the
bottom-up's and the neck's. When the neck is two-way or an RPN hook is set, ``forward``
returns ``(rpn_features, roi_features)`` (docs/components.md#conventions), both with the keys and
channels of ``output_shape()``; ``SephGeneralizedRCNN`` routes them. ``returns_two_dicts`` says
which.

State-dict names: the bottom-up keeps detectron2's ``bottom_up.*`` prefix; the neck is
``neck.*``, hooks ``before_hook.*``/``after_hook.*``/``rpn_hook.*``, extra levels
``extra_levels.*``.
"""
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from sephnet.backend import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_resnet_backbone
from sephnet.modeling.backbone.hooks import BackboneHook, build_backbone_hook, pyramid_keys
from sephnet.modeling.backbone.hooks.base import pyramid_level
from sephnet.modeling.backbone.seph_fpn import LastLevelStridedConvs, build_seph_resnet_fpn_backbone

__all__ = [
    "HookedBackbone",
    "make_extra_levels",
    "build_hooked_neck_backbone",
    "build_seph_hooked_fpn_backbone",
]

Features = Dict[str, torch.Tensor]


def _check_hook_input(hook: Optional[BackboneHook], shapes: Dict[str, ShapeSpec], where: str):
    if hook is not None and hook.input_shapes != shapes:
        raise ValueError(
            f"HookedBackbone: the {where} hook was built for {hook.input_shapes}, but receives "
            f"{shapes}."
        )


class HookedBackbone(Backbone):
    """bottom-up -> extra levels -> before hook -> neck -> after hook (-> RPN hook)."""

    def __init__(
        self,
        *,
        bottom_up: Backbone,
        neck: Optional[nn.Module] = None,
        extra_levels: Optional[LastLevelStridedConvs] = None,
        before_hook: Optional[BackboneHook] = None,
        after_hook: Optional[BackboneHook] = None,
        rpn_hook: Optional[BackboneHook] = None,
    ):
        """
        Args:
            bottom_up: a ``Backbone`` (ResNet), or a whole FPN when ``neck`` is None.
            neck: a module ``forward(Dict[str, Tensor]) -> Dict`` (or a ``(rpn, roi)`` pair
                when its attribute ``two_way`` is True) with ``output_shape()`` and optionally
                ``size_divisibility``; None passes the bottom-up dict on.
            extra_levels: strided convs on ``extra_levels.in_feature`` adding ``res<S+1>``, ...
                to the bottom-up dict.
            before_hook, after_hook, rpn_hook: built for the shapes they receive (checked).
        """
        super().__init__()
        if neck is None and before_hook is not None:
            raise ValueError("HookedBackbone: a before hook needs a neck to run before.")
        self.bottom_up = bottom_up
        shapes = dict(bottom_up.output_shape())
        self.extra_levels = extra_levels
        self._extra_names = []
        if extra_levels is not None:
            src = extra_levels.in_feature
            if src not in shapes or pyramid_level(src) is None:
                raise ValueError(
                    f"HookedBackbone: extra levels read {src!r}, not a bottom-up pyramid level "
                    f"of {sorted(shapes)}."
                )
            channels = extra_levels.convs[-1].out_channels
            for k in range(1, extra_levels.num_levels + 1):
                name = f"res{pyramid_level(src) + k}"
                shapes[name] = ShapeSpec(channels=channels, stride=shapes[src].stride * 2**k)
                self._extra_names.append(name)
        _check_hook_input(before_hook, shapes, "before")
        self.before_hook = before_hook
        if before_hook is not None:
            shapes = before_hook.output_shape()
        self._bottom_up_shapes = shapes if neck is not None else None
        self.neck = neck
        self.two_way = bool(getattr(neck, "two_way", False))
        if neck is not None:
            shapes = dict(neck.output_shape())
        if self.two_way and after_hook is not None:
            raise ValueError(
                "HookedBackbone: a two-way neck takes no after hook (its RPN FPN's hook is the "
                "RPN hook; its ROI FPN has none in the log)."
            )
        _check_hook_input(after_hook, shapes, "after")
        self.after_hook = after_hook
        if after_hook is not None:
            shapes = after_hook.output_shape()
        _check_hook_input(rpn_hook, shapes, "RPN")
        if rpn_hook is not None and rpn_hook.output_shape() != shapes:
            raise ValueError(
                f"HookedBackbone: the RPN hook changes the shapes {shapes} to "
                f"{rpn_hook.output_shape()}; RPN and ROI features must have the same shapes."
            )
        self.rpn_hook = rpn_hook
        self.returns_two_dicts = self.two_way or rpn_hook is not None
        self._out_features = list(shapes)
        self._out_feature_channels = {k: s.channels for k, s in shapes.items()}
        self._out_feature_strides = {k: s.stride for k, s in shapes.items()}
        self._size_divisibility = max(
            int(getattr(bottom_up, "size_divisibility", 0) or 0),
            int(getattr(neck, "size_divisibility", 0) or 0),
        )

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Union[Features, Tuple[Features, Features]]:
        """
        Args:
            x: ``Tensor[N, 3, H, W]``, H and W divisible by ``size_divisibility``.

        Returns:
            name -> ``Tensor[N, C_k, H / stride_k, W / stride_k]`` as ``output_shape()``; or
            ``(rpn_features, roi_features)`` when ``returns_two_dicts``.
        """
        features = self.bottom_up(x)
        if self.extra_levels is not None:
            features = dict(features)
            extra = self.extra_levels(features[self.extra_levels.in_feature])
            features.update(zip(self._extra_names, extra))
        if self.before_hook is not None:
            features = self.before_hook(features)
        bottom_up = features if self.neck is not None else None
        out = self.neck(features) if self.neck is not None else features
        rpn_out, roi_out = out if self.two_way else (out, out)
        if self.after_hook is not None:
            roi_out = rpn_out = self.after_hook(roi_out, bottom_up)
        if self.rpn_hook is not None:
            rpn_out = self.rpn_hook(rpn_out, bottom_up)
        roi_out = {k: roi_out[k] for k in self._out_features}
        if not self.returns_two_dicts:
            return roi_out
        return {k: rpn_out[k] for k in self._out_features}, roi_out


def make_extra_levels(
    cfg, bottom_up_shapes: Dict[str, ShapeSpec]
) -> Optional[LastLevelStridedConvs]:
    """The extra bottom-up levels of ``MODEL.SEPH.NECKS.EXTRA_LEVELS`` (None for 0).

    They start from the coarsest bottom-up pyramid level (res5) with
    ``MODEL.SEPH.NECKS.EXTRA_LEVEL_CHANNELS`` channels and ``MODEL.FPN.NORM``.
    """
    node = cfg.MODEL.SEPH.NECKS
    if node.EXTRA_LEVELS == 0:
        return None
    levels = pyramid_keys(bottom_up_shapes)
    if not levels:
        raise ValueError(
            f"MODEL.SEPH.NECKS.EXTRA_LEVELS={node.EXTRA_LEVELS} needs a bottom-up pyramid level "
            f"(res<l>) in MODEL.RESNETS.OUT_FEATURES; got {sorted(bottom_up_shapes)}."
        )
    return LastLevelStridedConvs(
        bottom_up_shapes[levels[-1]].channels,
        node.EXTRA_LEVEL_CHANNELS,
        num_levels=node.EXTRA_LEVELS,
        in_feature=levels[-1],
        norm=cfg.MODEL.FPN.NORM,
        norm_groups=cfg.MODEL.SEPH.EVONORM.GROUPS,
        norm_eps=cfg.MODEL.SEPH.EVONORM.EPS,
    )


def _hook(cfg, place: str, input_shapes, bottom_up_shapes):
    return build_backbone_hook(
        cfg,
        cfg.MODEL.SEPH.BACKBONE_HOOKS[place],
        f"MODEL.SEPH.BACKBONE_HOOKS.{place}",
        input_shapes=input_shapes,
        bottom_up_shapes=bottom_up_shapes,
    )


def build_hooked_neck_backbone(
    cfg, input_shape: ShapeSpec, neck_factory: Callable[..., nn.Module]
) -> HookedBackbone:
    """ResNet + extra levels + hooks around the neck ``neck_factory(cfg, input_shapes)``.

    Shared by the builders of sephnet's necks (TF-style FPN, BiFPN, two-way FPN).
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    extra_levels = make_extra_levels(cfg, bottom_up.output_shape())
    shapes = dict(bottom_up.output_shape())
    if extra_levels is not None:
        # Same naming rule as HookedBackbone.
        src = extra_levels.in_feature
        for k in range(1, extra_levels.num_levels + 1):
            shapes[f"res{pyramid_level(src) + k}"] = ShapeSpec(
                channels=cfg.MODEL.SEPH.NECKS.EXTRA_LEVEL_CHANNELS,
                stride=shapes[src].stride * 2**k,
            )
    before = _hook(cfg, "BEFORE", shapes, None)
    neck_in = before.output_shape() if before is not None else shapes
    neck = neck_factory(cfg, neck_in)
    after = _hook(cfg, "AFTER", neck.output_shape(), neck_in)
    rpn_in = after.output_shape() if after is not None else neck.output_shape()
    rpn = _hook(cfg, "RPN", rpn_in, neck_in)
    return HookedBackbone(
        bottom_up=bottom_up,
        neck=neck,
        extra_levels=extra_levels,
        before_hook=before,
        after_hook=after,
        rpn_hook=rpn,
    )


@BACKBONE_REGISTRY.register()
def build_seph_hooked_fpn_backbone(cfg, input_shape: ShapeSpec) -> HookedBackbone:
    """``build_seph_resnet_fpn_backbone`` (detectron2's FPN) with after and RPN hooks.

    Before hooks need a sephnet neck (detectron2's FPN calls its bottom-up itself), so
    ``MODEL.SEPH.BACKBONE_HOOKS.BEFORE`` must be "" here; so must hooks needing the bottom-up
    maps after the neck (balance V2).
    """
    if cfg.MODEL.SEPH.BACKBONE_HOOKS.BEFORE:
        raise ValueError(
            f"MODEL.SEPH.BACKBONE_HOOKS.BEFORE={cfg.MODEL.SEPH.BACKBONE_HOOKS.BEFORE!r} is not "
            "supported by build_seph_hooked_fpn_backbone; use build_seph_tf_fpn_backbone."
        )
    fpn = build_seph_resnet_fpn_backbone(cfg, input_shape)
    after = _hook(cfg, "AFTER", fpn.output_shape(), None)
    rpn_in = after.output_shape() if after is not None else fpn.output_shape()
    rpn = _hook(cfg, "RPN", rpn_in, None)
    return HookedBackbone(bottom_up=fpn, after_hook=after, rpn_hook=rpn)
