"""Anchor (prior box) generators that detectron2's ``DefaultAnchorGenerator`` does not cover."""
from sephnet.modeling.anchor.ssd_priors import SSDPriorGenerator, num_priors_per_location

__all__ = ["SSDPriorGenerator", "num_priors_per_location"]
