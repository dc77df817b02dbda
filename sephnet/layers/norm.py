"""Norm lookup by config name: detectron2's names plus sephnet's own (EvoNormS0, FRN).

detectron2's :func:`get_norm` maps a config ``NORM`` string to a layer through a closed
dict, and sephnet never edits that dict. Instead, every sephnet component that reads a
``NORM`` key passes the name through :func:`resolve_norm`:

* a name registered in ``SEPH_NORM_REGISTRY`` (``"EvoNormS0"``, ``"FRN"``) becomes a factory
  ``channels -> nn.Module``, which detectron2's ``get_norm``, ``Conv2d(norm=...)`` and
  ``FPN(norm=...)`` accept in place of a string;
* any name the backend's ``get_norm`` knows (``""``, ``"BN"``, ``"SyncBN"``, ``"FrozenBN"``,
  ``"GN"``, ``"nnSyncBN"``, ``"naiveSyncBN"``, ``"naiveSyncBN_N"``; the portable core also
  has ``"LN"``, detectron2 v0.6 does not) is returned unchanged.

Contract for classes in ``SEPH_NORM_REGISTRY``: ``cls(num_channels, *, groups, eps)``
builds the layer; a class attribute ``includes_activation = True`` says the layer has its
own non-linearity, so heads must not append a ReLU after it.
"""
import functools
from typing import Callable, List, Optional, Union

from torch import nn

from sephnet.backend import get_norm as _backend_get_norm
from sephnet.layers import evonorm as _evonorm  # noqa: F401  (registers EvoNormS0)
from sephnet.layers import frn as _frn  # noqa: F401  (registers FRN)
from sephnet.modeling.registry import SEPH_NORM_REGISTRY

__all__ = [
    "resolve_norm",
    "norm_includes_activation",
    "get_norm",
    "is_sephnet_norm",
    "valid_norm_names",
    "norm_uses_groups",
]

NormSpec = Union[str, Callable[[int], nn.Module]]

# Every name some detectron2 version's get_norm accepts; valid_norm_names() keeps those the
# backend in use really builds (detectron2 v0.6 has no "LN").
_UPSTREAM_CANDIDATES = (
    "BN",
    "SyncBN",
    "FrozenBN",
    "GN",
    "nnSyncBN",
    "naiveSyncBN",
    "naiveSyncBN_N",
    "LN",
)
# Divisible by GN's 32 groups, so probing "GN" succeeds.
_PROBE_CHANNELS = 32


def _sephnet_names() -> List[str]:
    return sorted(name for name, _ in SEPH_NORM_REGISTRY)


def _backend_knows(name: str) -> bool:
    try:
        _backend_get_norm(name, _PROBE_CHANNELS)
    except KeyError:
        return False
    return True


def is_sephnet_norm(name: str) -> bool:
    """Whether ``name`` is a norm only sephnet provides (registered in SEPH_NORM_REGISTRY).

    Such a name works only in components that resolve it with :func:`resolve_norm`;
    detectron2's own components would fail on it.
    """
    return isinstance(name, str) and name in _sephnet_names()


def valid_norm_names() -> List[str]:
    """Every accepted ``NORM`` value: ``""``, the backend's names, then sephnet's."""
    upstream = [name for name in _UPSTREAM_CANDIDATES if _backend_knows(name)]
    return [""] + upstream + [n for n in _sephnet_names() if n not in upstream]


def resolve_norm(name: str, *, groups: int = 32, eps: float = 1e-5) -> NormSpec:
    """Turn a config ``NORM`` value into something detectron2's ``get_norm`` accepts.

    Args:
        name: ``""`` (no norm), a backend norm name, or a sephnet norm name.
        groups: channel groups of sephnet's group-wise norms (EvoNormS0); from
            ``MODEL.SEPH.EVONORM.GROUPS``. Backend names ignore it (detectron2's "GN" is
            fixed to 32 groups).
        eps: epsilon of sephnet's norms; from ``MODEL.SEPH.EVONORM.EPS``. Backend names
            ignore it.

    Returns:
        ``name`` itself for ``""`` and backend names; for a sephnet name a factory
        ``channels -> nn.Module``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is unknown; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"resolve_norm: norm name must be a str, got {type(name).__name__} {name!r}."
        )
    if name == "":
        return name
    if name in _sephnet_names():
        return functools.partial(SEPH_NORM_REGISTRY.get(name), groups=groups, eps=eps)
    if _backend_knows(name):
        return name
    raise ValueError(
        f"Unknown norm {name!r}; expected one of {valid_norm_names()} ('' means no norm)."
    )


def norm_includes_activation(name: str) -> bool:
    """Whether the norm named ``name`` has its own non-linearity (EvoNormS0 and FRN do).

    Heads ask this before appending a ReLU after a norm.

    Raises:
        TypeError, ValueError: as :func:`resolve_norm` for a bad name.
    """
    resolve_norm(name)  # rejects unknown names
    if not is_sephnet_norm(name):
        return False
    return bool(getattr(SEPH_NORM_REGISTRY.get(name), "includes_activation", False))


def norm_uses_groups(name: str) -> bool:
    """Whether the sephnet norm ``name`` normalises over channel groups (EvoNormS0 does,
    FRN does not: its layers need no width divisible by ``MODEL.SEPH.EVONORM.GROUPS``)."""
    return is_sephnet_norm(name) and bool(
        getattr(SEPH_NORM_REGISTRY.get(name), "uses_groups", True)
    )


def get_norm(
    name: str, channels: int, *, groups: int = 32, eps: float = 1e-5
) -> Optional[nn.Module]:
    """Build the norm layer ``name`` for ``channels`` channels.

    Args:
        name: as :func:`resolve_norm`.
        channels: C, the number of channels to normalise.
        groups, eps: parameters of sephnet's norms, as :func:`resolve_norm`.

    Returns:
        The layer, or ``None`` for ``""``.
    """
    return _backend_get_norm(resolve_norm(name, groups=groups, eps=eps), channels)
