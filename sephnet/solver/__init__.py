"""sephnet's additions to the solver (the backend's ``solver`` package does the rest)."""
from .optimizer import build_optimizer

__all__ = ["build_optimizer"]
