"""sephnet: decoupled ("seph") ROI heads and the experiment log's ablations as a detectron2 project.

Framework names come from :mod:`sephnet.backend` (real detectron2 when importable,
otherwise the portable core :mod:`sephnet.d2`). Importing ``sephnet`` registers every
component (unconditionally, so any config can name any of them) and the built-in
``shapes_train``/``shapes_val`` datasets.
"""
from . import data, layers, modeling  # noqa: F401  (registration)
from .config import add_sephnet_config, validate_sephnet_config

__version__ = "0.1.0"
__all__ = ["add_sephnet_config", "validate_sephnet_config", "__version__"]
