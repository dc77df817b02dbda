"""Registry and builder for whole-model meta-architectures (``MODEL.META_ARCHITECTURE``)."""
import torch
from torch import nn

from sephnet.d2.utils.registry import Registry

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Meta-architectures: complete models. A registered class is called as ``obj(cfg)`` and must
return an ``nn.Module``.
"""


def build_model(cfg) -> nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``.

    Weights are freshly initialised; nothing is loaded from ``cfg.MODEL.WEIGHTS``.
    """
    name = cfg.MODEL.META_ARCHITECTURE
    model = META_ARCH_REGISTRY.get(name)(cfg)
    model.to(torch.device(cfg.MODEL.DEVICE))
    # Same identifier detectron2 reports to PyTorch's (normally disabled) API-usage logger.
    torch._C._log_api_usage_once("detectron2.modeling.meta_arch." + name)
    return model
