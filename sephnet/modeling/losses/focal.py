"""Softmax focal loss for the (K+1)-way ROI classifier (Lin et al. 2017, "Focal Loss for
Dense Object Detection", in its multi-class form)."""
import torch
from torch.nn import functional as F

__all__ = ["softmax_focal_loss"]


def softmax_focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-ROI ``-(1 - p_t)^gamma * log(p_t)``, p_t the softmax probability of the label.

    ``gamma = 0`` gives the cross-entropy. Well-classified ROIs (p_t near 1) are
    down-weighted, so the many easy backgrounds stop dominating the loss. No alpha term:
    the softmax form has one probability per ROI, and class balancing is left to the
    sampler.

    Args:
        logits: float ``[R, K+1]``.
        labels: int64 ``[R]`` in ``[0, K]``.
        gamma: focusing parameter, ``>= 0``.

    Returns:
        float ``[R]``.
    """
    log_pt = F.log_softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]
    return -((1.0 - log_pt.exp()) ** gamma) * log_pt
