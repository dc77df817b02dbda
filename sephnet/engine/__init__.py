"""sephnet's own training hooks (beside the backend's ``engine.hooks``)."""
from .progress import TerminalProgress, format_progress

__all__ = ["TerminalProgress", "format_progress"]
