"""Optional use of torchvision's detection kernels (``nms``, ``batched_nms``, ``roi_align``).

torchvision is optional for the portable core. It is used only when it imports *and* its
compiled ops run: a torchvision wheel built for another torch (e.g. a CUDA torchvision next
to a CPU torch) raises ``RuntimeError`` at import time, which counts as "not usable", as
does any other exception. ``SEPHNET_TORCHVISION_OPS=0`` turns the torchvision path off so
the core's own PyTorch implementations can be tested and compared on one machine.
"""
import functools
import os
from types import ModuleType
from typing import Optional, Tuple

ENV_VAR = "SEPHNET_TORCHVISION_OPS"


@functools.lru_cache(maxsize=None)
def _probe() -> Tuple[Optional[ModuleType], str]:
    """Import torchvision.ops and run one tiny nms; return (ops module or None, status)."""
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "off", "no"):
        return None, f"not used ({ENV_VAR}=0)"
    try:
        import torch
        import torchvision
        from torchvision import ops

        ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
    except Exception as e:  # RuntimeError on a CPU torch with a CUDA torchvision, ImportError, ...
        return None, f"not usable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return ops, f"usable ({torchvision.__version__})"


def torchvision_ops() -> Optional[ModuleType]:
    """Return ``torchvision.ops`` when it is usable and enabled, else ``None``."""
    return _probe()[0]


def torchvision_status() -> str:
    """A short human-readable status line, e.g. ``"not usable (RuntimeError: ...)"``."""
    return _probe()[1]
