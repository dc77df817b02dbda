"""EvoNorm-S0 computed for inference: fewer memory passes, one full-size buffer.

:class:`~sephnet.layers.evonorm.EvoNormS0` computes its formula with autograd-friendly,
out-of-place operations: four full-size temporaries per call and ``Tensor.var``, whose
single-pass (Welford) reduction over a group's channels and positions is several times slower
than a plain sum. On a CPU each fresh temporary of a detector-sized map (tens of MB) also pays
for its pages on first touch. :class:`EvoNormS0Inference` computes the same formula without
gradients as:

* the group variance in two passes: per-channel means (a fast reduction in NCHW and in
  channels-last memory alike), the group mean from them, then the per-channel sums of squared
  deviations from it;
* the output ``x * sigmoid(v x) * scale + beta`` written into the buffer that held the
  deviations.

Same formula, other summation order: outputs differ from EvoNormS0's in the last float bits.
With gradients enabled, or for half-precision inputs, it runs EvoNormS0's own forward.
"""
import math

import torch

from sephnet.layers.evonorm import EvoNormS0

__all__ = ["EvoNormS0Inference"]


class EvoNormS0Inference(EvoNormS0):
    """:class:`EvoNormS0` (same parameters and state dict) with the inference computation
    above; build it from a trained layer with :meth:`from_module`."""

    @classmethod
    def from_module(cls, module: EvoNormS0) -> "EvoNormS0Inference":
        """A copy of ``module`` (sharing its parameter tensors) that computes for inference."""
        layer = cls(module.num_channels, groups=module.groups, eps=module.eps)
        layer.weight, layer.bias, layer.v = module.weight, module.bias, module.v
        return layer.train(module.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]`` or ``Tensor[N, C]``; N may be 0.

        Returns:
            A tensor with the shape, dtype and memory format of ``x``.
        """
        if (torch.is_grad_enabled() or x.dtype not in (torch.float32, torch.float64)
                or x.dim() not in (2, 4) or x.shape[1] != self.num_channels or not len(x)):
            return super().forward(x)  # EvoNormS0's computation, and its errors on bad shapes
        n, c = x.shape[:2]
        per_group = c // self.groups
        spatial = tuple(range(2, x.dim()))
        param_shape = (1, c) + (1,) * len(spatial)
        channel_mean = x.mean(dim=spatial) if spatial else x  # [N, C]
        group_mean = channel_mean.view(n, self.groups, per_group).mean(dim=2, keepdim=True)
        centred_mean = group_mean.expand(n, self.groups, per_group).reshape(
            (n, c) + (1,) * len(spatial))
        buffer = torch.sub(x, centred_mean)  # x's memory format
        squares = buffer.square_().sum(dim=spatial) if spatial else buffer.square_()
        count = per_group * math.prod(x.shape[2:])
        var = squares.view(n, self.groups, per_group).sum(dim=2, keepdim=True) / count
        scale = (torch.rsqrt(var + self.eps) * self.weight.view(1, self.groups, per_group)
                 ).reshape((n, c) + (1,) * len(spatial))
        torch.mul(x, self.v.view(param_shape), out=buffer)
        buffer.sigmoid_().mul_(x)
        return torch.addcmul(self.bias.view(param_shape), buffer, scale, out=buffer)
