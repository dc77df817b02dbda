"""sephnet's own training hooks and event writers (beside the backend's ``engine.hooks``)."""
from .progress import TerminalProgress, format_progress
from .tracking import MLflowWriter, WandbWriter, build_tracking_writers
from .validation_loss import ValidationLoss

__all__ = ["TerminalProgress", "format_progress", "ValidationLoss", "WandbWriter",
           "MLflowWriter", "build_tracking_writers"]
