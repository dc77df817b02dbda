"""Checkpoint loading and saving of the portable core (detectron2.checkpoint)."""
from fvcore.common.checkpoint import Checkpointer, PeriodicCheckpointer

from sephnet.d2.checkpoint import catalog as _catalog  # noqa: F401  (registers catalog://)
from sephnet.d2.checkpoint.detection_checkpoint import DetectionCheckpointer

__all__ = ["Checkpointer", "PeriodicCheckpointer", "DetectionCheckpointer"]
