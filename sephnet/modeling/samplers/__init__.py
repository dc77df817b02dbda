"""ROI samplers (B §2.10); importing this package registers them.

See :mod:`sephnet.modeling.samplers.base` for the contract every sampler follows.
"""
from sephnet.modeling.samplers.base import ROISampler, build_roi_sampler
from sephnet.modeling.samplers.random import RandomROISampler
from sephnet.modeling.samplers.balanced import BalancedROISampler
from sephnet.modeling.samplers.ohem import OHEMROISampler

__all__ = [
    "ROISampler",
    "build_roi_sampler",
    "RandomROISampler",
    "BalancedROISampler",
    "OHEMROISampler",
]
