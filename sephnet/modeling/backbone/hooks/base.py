"""The backbone-hook contract and the helpers every hook family shares
(docs/components.md#backbone-hooks).

A backbone hook transforms a feature dict, either the bottom-up maps before the neck
("before", keys ``res2``..``res5`` and extra levels such as ``res6``) or the neck outputs
("after", keys ``p3``..``p6``)::

    hook = SomeHook(input_shapes={"p3": ShapeSpec(channels=256, stride=8), ...}, ...)
    out = hook(features)                   # Dict[str, Tensor[N, C_k, H_k, W_k]]
    hook.output_shape()                    # Dict[str, ShapeSpec] of ``out``

Hooks act on *pyramid levels* only: keys ``res<l>``, ``p<l>`` or ``c<l>`` (any case), whose
level ``l`` is the digit. Other keys (``stem``, a fusion hook's ``f3``) pass through
unchanged (the original dropped them; passing them on keeps the backbone contract).
``output_shape()`` declares exactly what ``forward`` returns: keys, channels, strides.

A hook that needs the bottom-up maps while acting after the neck (BalanceBackboneHook V2)
sets ``needs_bottom_up = True`` and receives them as ``forward(features, bottom_up)``.
"""
import re
from typing import Dict, List, Optional

import torch
from torch import nn

from sephnet.backend import ShapeSpec
from sephnet.modeling.registry import SEPH_BACKBONE_HOOK_REGISTRY, get_registered

__all__ = [
    "BackboneHook",
    "pyramid_level",
    "pyramid_keys",
    "check_same_channels",
    "build_backbone_hook",
]

_LEVEL_KEY = re.compile(r"(?:res|p|c)(\d+)", re.IGNORECASE)


def pyramid_level(name: str) -> Optional[int]:
    """The pyramid level of a feature name (``"res4"``, ``"p4"``, ``"C4"`` -> 4), else None."""
    match = _LEVEL_KEY.fullmatch(name)
    return int(match.group(1)) if match else None


def pyramid_keys(shapes: Dict[str, ShapeSpec]) -> List[str]:
    """The pyramid-level keys of ``shapes``, finest level first."""
    keys = [k for k in shapes if pyramid_level(k) is not None]
    return sorted(keys, key=pyramid_level)


class BackboneHook(nn.Module):
    """Base of sephnet's backbone hooks: stores the input shapes, passes them through.

    Subclasses override ``forward`` and, when they change channels or add keys,
    ``output_shape``.
    """

    needs_bottom_up = False

    def __init__(self, *, input_shapes: Dict[str, ShapeSpec]):
        """
        Args:
            input_shapes: name -> ShapeSpec (channels, stride) of the dict the hook receives.
        """
        super().__init__()
        if not input_shapes:
            raise ValueError(f"{type(self).__name__}: input_shapes is empty.")
        self._input_shapes = dict(input_shapes)

    @property
    def input_shapes(self) -> Dict[str, ShapeSpec]:
        return dict(self._input_shapes)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """name -> ShapeSpec of the dict ``forward`` returns (same keys and order as input)."""
        return dict(self._input_shapes)

    def levels_from(self, min_level: int) -> List[str]:
        """Pyramid keys whose level is >= ``min_level``, finest first."""
        return [k for k in pyramid_keys(self._input_shapes) if pyramid_level(k) >= min_level]

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        bottom_up: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        raise NotImplementedError


def check_same_channels(hook: str, shapes: Dict[str, ShapeSpec], keys: List[str]) -> int:
    """The common channel count of ``keys``; ValueError naming them when they differ."""
    channels = {shapes[k].channels for k in keys}
    if len(channels) != 1:
        raise ValueError(
            f"{hook} needs equal channels on the levels it mixes; got "
            f"{ {k: shapes[k].channels for k in keys} }."
        )
    return channels.pop()


def build_backbone_hook(
    cfg,
    name: str,
    config_key: str,
    *,
    input_shapes: Dict[str, ShapeSpec],
    bottom_up_shapes: Optional[Dict[str, ShapeSpec]] = None,
) -> Optional[BackboneHook]:
    """Build the hook registered as ``name`` from ``cfg`` (``""`` = no hook, returns None).

    Args:
        cfg: the config (``MODEL.SEPH.BACKBONE_HOOKS.*``).
        name: a name in ``SEPH_BACKBONE_HOOK_REGISTRY``.
        config_key: the key ``name`` came from, for error messages.
        input_shapes: shapes of the dict the hook will receive.
        bottom_up_shapes: shapes of the bottom-up maps available to an after-hook (None when
            the backbone cannot provide them).

    Raises:
        ValueError: unknown name; a hook's own errors (e.g. bottom-up maps needed but absent).
    """
    if name == "":
        return None
    hook_cls = get_registered(SEPH_BACKBONE_HOOK_REGISTRY, name, config_key)
    return hook_cls(cfg, input_shapes=input_shapes, bottom_up_shapes=bottom_up_shapes)

