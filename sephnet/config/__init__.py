"""sephnet's config keys and the one place that checks them.

Each module of this package holds one component's keys under ``MODEL.SEPH.<COMPONENT>``
and defines two functions:

* ``add_config(cfg)``: add the component's keys, each with a comment giving its meaning,
  units and allowed values (``cfg.MODEL.SEPH`` already exists);
* ``validate_config(cfg)``: raise ``ValueError`` naming the keys and values of any
  inconsistent combination.

:func:`add_sephnet_config` and :func:`validate_sephnet_config` run every module's function
in module-name order, so adding a component's keys means adding one file here.
"""
import importlib
import pkgutil
from types import ModuleType
from typing import List

from sephnet.backend import CfgNode

__all__ = ["add_sephnet_config", "validate_sephnet_config"]


def _component_modules() -> List[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def add_sephnet_config(cfg: CfgNode) -> None:
    """Add every sephnet key (``MODEL.SEPH.*``) with its default to ``cfg``, in place.

    Safe to call once per config; a second call raises ``ValueError`` (the keys exist).
    """
    if "SEPH" in cfg.MODEL:
        raise ValueError("add_sephnet_config was already applied to this config (MODEL.SEPH exists).")
    cfg.MODEL.SEPH = CfgNode()
    for module in _component_modules():
        module.add_config(cfg)


def validate_sephnet_config(cfg: CfgNode) -> None:
    """Check cross-key constraints of a merged config; raise ``ValueError`` naming the keys."""
    if "SEPH" not in cfg.MODEL:
        raise ValueError("validate_sephnet_config needs a config prepared with add_sephnet_config.")
    for module in _component_modules():
        module.validate_config(cfg)
