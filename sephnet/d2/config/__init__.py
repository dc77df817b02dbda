"""Configuration: the yacs ``CfgNode``, the default tree and ``@configurable``.

Mirrors ``detectron2.config`` (without LazyConfig).
"""

from sephnet.d2.config.config import CfgNode, configurable, get_cfg, global_cfg, set_global_cfg

__all__ = ["CfgNode", "get_cfg", "global_cfg", "set_global_cfg", "configurable"]
