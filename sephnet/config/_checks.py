"""Checks shared by the component modules of :mod:`sephnet.config` (not a component: the
leading underscore keeps it out of ``add_sephnet_config`` / ``validate_sephnet_config``)."""

from typing import Callable, List

__all__ = ["check_int_at_least", "component_defaults", "non_default_keys"]


def check_int_at_least(value, key: str, minimum: int) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r}; expected an int >= {minimum}.")


def non_default_keys(node, defaults, prefix: str = "") -> List[str]:
    """Dotted names (``prefix`` + key) of the leaves of ``node`` whose value differs from
    ``defaults`` (same tree; lists and tuples compare by their items)."""
    changed = []
    for key, value in node.items():
        default = defaults[key]
        if isinstance(value, dict):
            changed += non_default_keys(value, default, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
            if list(value) != list(default):
                changed.append(f"{prefix}{key}")
        elif value != default:
            changed.append(f"{prefix}{key}")
    return changed


def component_defaults(add_config: Callable, *path: str):
    """The defaults node ``MODEL.SEPH.<path>`` that a component's ``add_config`` creates."""
    from sephnet.backend import CfgNode

    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    cfg.MODEL.SEPH = CfgNode()
    add_config(cfg)
    node = cfg.MODEL.SEPH
    for name in path:
        node = node[name]
    return node
