"""sephnet's own training hooks (beside the backend's ``engine.hooks``)."""
from .progress import TerminalProgress, format_progress
from .validation_loss import ValidationLoss

__all__ = ["TerminalProgress", "format_progress", "ValidationLoss"]
