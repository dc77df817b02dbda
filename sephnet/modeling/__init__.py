"""sephnet's model components. Importing this package registers every one of them, in
sephnet's registries (``sephnet/modeling/registry.py``) and, under a ``Seph`` prefix, in
the backend's (backbones, proposal generators, RPN heads, ROI heads, mask heads)."""
from . import backbone, matchers, meta_arch, proposal_generator, roi_heads, samplers  # noqa: F401
from .registry import get_registered

__all__ = ["get_registered"]
