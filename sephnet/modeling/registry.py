"""Every sephnet registry, in one file.

detectron2 hard-wires a few things the experiment log varies (box predictor, ROI sampler,
RPN anchor matcher, norm lookup, feature hooks). sephnet opens one plug point for each,
here, as ``SEPH_<KIND>_REGISTRY``. Classes register themselves with a decorator in the
module that defines them, and ``sephnet/__init__.py`` imports every such module, so
registration never depends on what a config selects.

Things that detectron2 already has a registry for (backbones, proposal generators, ROI
heads, mask heads) register into detectron2's registries under a ``Seph`` prefix.
"""
from typing import Any

from sephnet.backend import Registry

SEPH_NORM_REGISTRY = Registry("SEPH_NORM")
SEPH_NORM_REGISTRY.__doc__ = """Norm layers sephnet adds (e.g. EvoNormS0): ``cls(num_channels) -> nn.Module``."""

SEPH_BOX_HEAD_REGISTRY = Registry("SEPH_BOX_HEAD")
SEPH_BOX_HEAD_REGISTRY.__doc__ = """Decoupled ROI box heads: ``forward(x[R,C,S,S]) -> (cls_feat, box_feat)``."""

SEPH_BOX_PREDICTOR_REGISTRY = Registry("SEPH_BOX_PREDICTOR")
SEPH_BOX_PREDICTOR_REGISTRY.__doc__ = """Box predictors taking ``DecoupledFeatures``: class logits, box deltas, optional IoU."""

SEPH_ROI_SAMPLER_REGISTRY = Registry("SEPH_ROI_SAMPLER")
SEPH_ROI_SAMPLER_REGISTRY.__doc__ = """ROI samplers (contract in ``sephnet/modeling/samplers/base.py``) -> ``(fg_idx, bg_idx)``."""

SEPH_ANCHOR_MATCHER_REGISTRY = Registry("SEPH_ANCHOR_MATCHER")
SEPH_ANCHOR_MATCHER_REGISTRY.__doc__ = """RPN anchor matchers (ATSS family): label anchors like detectron2's Matcher."""

SEPH_BACKBONE_HOOK_REGISTRY = Registry("SEPH_BACKBONE_HOOK")
SEPH_BACKBONE_HOOK_REGISTRY.__doc__ = """Feature-dict transforms applied before/after the FPN."""

SEPH_ROI_HOOK_REGISTRY = Registry("SEPH_ROI_HOOK")
SEPH_ROI_HOOK_REGISTRY.__doc__ = """Transforms of pooled ROI features ``x[R,C,S,S] -> x[R,C,S,S]``."""


def get_registered(registry: Registry, name: str, config_key: str) -> Any:
    """Look ``name`` up in ``registry``; an unknown name raises a ValueError naming the key.

    Args:
        registry: one of the registries above.
        name: the registered name (as written in the config).
        config_key: the config key the name came from, for the error message.

    Returns:
        The registered class or function.
    """
    names = sorted(name for name, _ in registry)
    if name not in names:
        raise ValueError(
            f"{config_key}={name!r} is not registered in {registry._name}; "
            f"available: {', '.join(names) or '(none)'}."
        )
    return registry.get(name)


SEPH_BOX_CODER_REGISTRY = Registry("SEPH_BOX_CODER")
SEPH_BOX_CODER_REGISTRY.__doc__ = """ROI box coders: ``weights``, ``get_deltas``, ``apply_deltas`` as Box2BoxTransform."""
