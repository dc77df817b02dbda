"""Cross-attention from box features to context features, without a residual.

The log's ``non_local_blockv3`` as its ROI heads use it (docs/components.md#box-heads
IouHeadNonLocalROIHeadsHook): queries from one map, keys and values from another, and the
caller decides what (if anything) to add back — V5/V6 add a gamma-scaled residual around
the *value* input, V7 and the IoU hook add none. (``sephnet.layers.NonLocalBlock`` always
adds the residual around its query input, so it cannot express these.)

::

    q_in [R, C, H, W] --conv1x1--> Q [R, Dq, H, W]
    kv_in [R, C', h, w] --conv1x1--> K [R, Dq, h, w], V [R, Dv, h, w]
        per head j: O_j = softmax(Q_j K_j^T / sqrt(Dv / heads)) V_j     [R, HW, Dv/heads]
    O = concat_j O_j -> [R, Dv, H, W] --conv1x1--> [R, C, H, W]

Scale 1/sqrt(per-head value width), as in the original (and in ``NonLocalBlock``).
"""
import math
from typing import Sequence

import torch
from torch import nn

from sephnet.layers.non_local import attention_dims

__all__ = ["CrossAttention"]


class CrossAttention(nn.Module):
    """Multi-head attention of ``q_in`` over ``kv_in``; returns the projected output only."""

    def __init__(
        self,
        channels: int,
        *,
        context_channels: int,
        multipliers: Sequence[int] = (1, 1, 1),
        num_heads: int = 1,
    ):
        """
        Args:
            channels: C of ``q_in`` and of the output.
            context_channels: C' of ``kv_in``.
            multipliers: (mq, mk, mv): projection widths C // m (mq must equal mk).
            num_heads: heads; must divide both widths.
        """
        super().__init__()
        dq, dk, dv = attention_dims(channels, multipliers=multipliers)
        if dq != dk or num_heads < 1 or dq % num_heads or dv % num_heads:
            raise ValueError(
                f"CrossAttention: multipliers={tuple(multipliers)!r} give widths {(dq, dk, dv)}"
                f" and num_heads={num_heads}; Q and K widths must match and heads divide both."
            )
        self.num_heads = num_heads
        self.query = nn.Conv2d(channels, dq, 1)
        self.key = nn.Conv2d(context_channels, dk, 1)
        self.value = nn.Conv2d(context_channels, dv, 1)
        self.out = nn.Conv2d(dv, channels, 1)
        for conv in (self.query, self.key, self.value, self.out):
            nn.init.zeros_(conv.bias)

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        """
        Args:
            q_in: ``Tensor[R, C, H, W]``.
            kv_in: ``Tensor[R, C', h, w]`` (any h, w).

        Returns:
            ``Tensor[R, C, H, W]``, the attention output (no residual, no norm).
        """
        r, _, h, w = q_in.shape
        heads = self.num_heads

        def per_head(t: torch.Tensor) -> torch.Tensor:  # [R, D, a, b] -> [R, heads, a*b, D/heads]
            d, a, b = t.shape[1:]
            return t.reshape(r, heads, d // heads, a * b).transpose(2, 3)

        q, k, v = per_head(self.query(q_in)), per_head(self.key(kv_in)), per_head(self.value(kv_in))
        logits = q @ k.transpose(2, 3) / math.sqrt(v.shape[-1])
        o = torch.softmax(logits, dim=-1) @ v  # [R, heads, HW, Dv/heads]
        return self.out(o.transpose(2, 3).reshape(r, o.shape[1] * o.shape[3], h, w))
