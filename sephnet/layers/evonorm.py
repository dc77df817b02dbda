"""EvoNorm-S0: a batch-independent normalisation layer with its own non-linearity.

The experiment log's heads and FPN use EvoNorm-S0 (Liu et al. 2020, "Evolving
Normalization-Activation Layers") in place of a norm followed by ReLU
(docs/components.md#evonorms0).
For every sample n and channel group g, with per-channel parameters gamma, beta and v::

    y = x * sigmoid(v * x) * gamma / sqrt(var_{n,g}(x) + eps) + beta

``var_{n,g}`` is the population (biased) variance of x over the group's channels and all
spatial positions of sample n. The mean is only used inside the variance; x itself is not
centred. There are no running statistics, so training and evaluation compute the same
function and a sample's output never depends on the rest of the batch.
"""
import torch
from torch import nn

from sephnet.modeling.registry import SEPH_NORM_REGISTRY

__all__ = ["EvoNormS0"]


@SEPH_NORM_REGISTRY.register()
class EvoNormS0(nn.Module):
    """EvoNorm-S0 over ``groups`` channel groups, for NCHW maps and [N, C] FC outputs.

    Parameters (all ``Tensor[C]``): ``weight`` (gamma, init 1), ``bias`` (beta, init 0) and
    ``v`` (the sigmoid's slope, init 1). The original code stores them as ``[G, C/G]``;
    a flat per-channel vector is the same set of numbers.

    A 2-D input ``x[N, C]`` is normalised over the C/G channels of each group, which is
    what the 4-D formula gives for ``x[N, C, 1, 1]``: one module serves convs and FCs.

    The layer contains a non-linearity (x * sigmoid(v x)), so heads built with it append no
    ReLU (see :func:`sephnet.layers.norm.norm_includes_activation`).
    """

    # Read by norm_includes_activation: heads append no ReLU after this layer.
    includes_activation = True

    def __init__(self, num_channels: int, *, groups: int = 32, eps: float = 1e-5):
        """
        Args:
            num_channels: C, the number of channels of the input.
            groups: G, the number of channel groups; must divide ``num_channels``. The log
                always used 32.
            eps: added to the group variance inside the square root (the log: 1e-5).

        Raises:
            ValueError: ``groups`` is not a positive divisor of ``num_channels``, or ``eps``
                is negative.
        """
        super().__init__()
        if num_channels <= 0:
            raise ValueError(f"EvoNormS0: num_channels must be positive, got {num_channels}.")
        if groups <= 0 or num_channels % groups != 0:
            raise ValueError(
                f"EvoNormS0: groups={groups} must be a positive divisor of "
                f"num_channels={num_channels}."
            )
        if eps < 0:
            raise ValueError(f"EvoNormS0: eps must be >= 0, got {eps}.")
        self.num_channels = num_channels
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.v = nn.Parameter(torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]`` or ``Tensor[N, C]``; N may be 0.

        Returns:
            A tensor with the shape and dtype of ``x``.
        """
        if x.dim() not in (2, 4) or x.shape[1] != self.num_channels:
            raise ValueError(
                f"EvoNormS0: expected input [N, {self.num_channels}] or "
                f"[N, {self.num_channels}, H, W], got {list(x.shape)}."
            )
        # Per-channel parameters broadcast over N (and H, W).
        param_shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        weight = self.weight.view(param_shape)
        bias = self.bias.view(param_shape)
        v = self.v.view(param_shape)

        if x.shape[0] == 0:
            # No statistics to take; keep the parameters in the graph (zero gradients).
            return x * weight + bias

        # Channels of a group are consecutive: split C into [G, C/G] (a view in NCHW and in
        # channels-last memory alike) and reduce over everything after G.
        grouped = x.unflatten(1, (self.groups, self.num_channels // self.groups))
        # Half-precision variances lose too much; compute the statistic in float32.
        stat_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        var = grouped.to(stat_dtype).var(dim=tuple(range(2, grouped.dim())), unbiased=False,
                                         keepdim=True)
        # gamma / std as one [N, C, 1, 1] factor: two full-size passes fewer (forward and
        # backward) than scaling by 1/std and gamma in turn.
        scale = (torch.rsqrt(var + self.eps).to(x.dtype) * weight.unflatten(1, grouped.shape[1:3])
                 ).flatten(1, 2)
        return torch.addcmul(bias, x * torch.sigmoid(v * x), scale)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.groups}, eps={self.eps}"
