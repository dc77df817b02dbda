"""Registry and builder for proposal generators (``MODEL.PROPOSAL_GENERATOR.NAME``)."""
from typing import Dict, Optional

from torch import nn

from sephnet.d2.layers import ShapeSpec
from sephnet.d2.utils.registry import Registry

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = """
Proposal generators: modules that turn backbone feature maps into object proposals.
A registered class is called as ``obj(cfg, input_shape)`` with ``input_shape`` a
dict[str, ShapeSpec] and must return an ``nn.Module``.
"""


def build_proposal_generator(cfg, input_shape: Dict[str, ShapeSpec]) -> Optional[nn.Module]:
    """Build the proposal generator named by ``cfg.MODEL.PROPOSAL_GENERATOR.NAME``.

    The name ``"PrecomputedProposals"`` means the model reads proposals from its inputs, so no
    module is built and None is returned.
    """
    name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if name == "PrecomputedProposals":
        return None
    return PROPOSAL_GENERATOR_REGISTRY.get(name)(cfg, input_shape)
