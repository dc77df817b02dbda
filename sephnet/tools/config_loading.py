"""The config a tool works on: exactly what ``train_net.py`` builds, without its side effects.

``train_net.setup`` also creates ``OUTPUT_DIR``, sets up logging and writes ``config.yaml``;
a tool that only analyses, exports or draws a model wants none of that. Both start from the
same steps: detectron2's defaults, sephnet's keys, the config file, command-line overrides,
:func:`validate_sephnet_config`, frozen.
"""
import os
from typing import Optional, Sequence

import torch

from sephnet import add_sephnet_config, validate_sephnet_config
from sephnet.backend import CfgNode, get_cfg

__all__ = ["load_config"]


def load_config(config_file: str, opts: Optional[Sequence[str]] = None,
                device: Optional[str] = None) -> CfgNode:
    """The frozen, validated config of ``config_file`` with ``opts`` (``KEY VALUE`` pairs),
    and ``MODEL.DEVICE`` set to ``device`` when given (tools that only count run on the CPU).

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: ``opts`` has an odd length, sephnet's keys disagree, or the config asks
            for CUDA where there is none.
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
    if device is not None:
        cfg.MODEL.DEVICE = device
    validate_sephnet_config(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available here; "
                         "add `MODEL.DEVICE cpu` to the overrides.")
    cfg.freeze()
    return cfg
