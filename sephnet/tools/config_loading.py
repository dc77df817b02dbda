"""The config a tool works on: exactly what ``train_net.py`` builds, without its side effects.

``train_net.setup`` also creates ``OUTPUT_DIR``, sets up logging and writes ``config.yaml``;
a tool that only analyses, exports or draws a model wants none of that. Both start from the
same steps: detectron2's defaults, sephnet's keys, the config file, command-line overrides,
:func:`validate_sephnet_config`, frozen.
"""
import os
from typing import Optional, Sequence

from sephnet import add_sephnet_config, validate_sephnet_config
from sephnet.backend import CfgNode, get_cfg

__all__ = ["load_config"]


def load_config(config_file: str, opts: Optional[Sequence[str]] = None) -> CfgNode:
    """The frozen, validated config of ``config_file`` with ``opts`` (``KEY VALUE`` pairs).

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: ``opts`` has an odd length, or sephnet's keys disagree.
        KeyError: a key of the file or of ``opts`` does not exist.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file!r} does not exist.")
    opts = list(opts or [])
    if len(opts) % 2:
        raise ValueError(f"Config overrides must be KEY VALUE pairs; got an odd number: {opts}")
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    validate_sephnet_config(cfg)
    cfg.freeze()
    return cfg
