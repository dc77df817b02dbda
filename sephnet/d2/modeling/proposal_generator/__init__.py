"""Proposal generators (detectron2.modeling.proposal_generator): the registry and the RPN."""
from .build import PROPOSAL_GENERATOR_REGISTRY, build_proposal_generator
from .rpn import RPN, RPN_HEAD_REGISTRY, StandardRPNHead, build_rpn_head

__all__ = [
    "PROPOSAL_GENERATOR_REGISTRY",
    "build_proposal_generator",
    "RPN_HEAD_REGISTRY",
    "build_rpn_head",
    "RPN",
    "StandardRPNHead",
]
