"""Config-free non-local (self-attention) blocks on feature maps
(docs/components.md#non-local-blocks).

Three forms, all ``x[N, C, H, W] -> y[N, C, H, W]``, shared by the backbone hooks and the
ROI-head hooks (where ``N`` is the number of ROIs R and ``H = W`` the pooled size)::

    x ---------------------------------------------------------------+
    |                                                                |
    +-> Q = conv1x1(x)        [N, Dq, H, W]   (bias, no norm/act)    |
    +-> K = conv1x1(ctx)      [N, Dq, h, w]   ctx = x, or ``context``|
    +-> V = conv1x1(ctx)      [N, Dv, h, w]                          |
         per head j of ``num_heads``:                                |
           A_j = softmax(Q_j K_j^T / sqrt(Dv / num_heads))  [N, HW, hw]
           O_j = A_j V_j                                    [N, HW, Dv/num_heads]
         O = concat_j O_j -> [N, Dv, H, W] -> conv1x1 -> [N, C, H, W]|
                                                     |               |
                         y = gamma * O + x  (or O + x) <-------------+
                         y = act(norm(y))   (both optional)

* :class:`NonLocalBlock` with ``context=None`` is the log's ``non_local_blockv1``;
* :class:`NonLocalBlock` called with a ``context`` map is ``non_local_blockv3``: the queries
  come from ``x``, keys and values from ``context`` (which may have another size and width);
* :class:`PositionalNonLocalBlock` is ``non_local_blockv4``: a learned positional embedding
  ``P`` (one vector per position of a fixed ``H x W`` grid) is added to ``x`` first, and the
  block above runs on ``x + P``: Q, K and V all read it and the residual is around it.

Reproduced literally despite a quirk (docs/components.md#non-local-blocks): the attention logits
are divided by the square root of the per-head **value** width, not of the key width. With the
log's settings (equal Q/K/V widths) the two coincide except for the old backbone hook (8, 8, 2),
where the scale is ``sqrt(C/2)`` instead of ``sqrt(C/8)``.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from sephnet.backend import Conv2d
from sephnet.layers.norm import build_norm, norm_includes_activation

__all__ = ["attention_dims", "NonLocalBlock", "PositionalNonLocalBlock"]


def attention_dims(
    channels: int,
    *,
    multipliers: Optional[Sequence[int]] = None,
    dims: Optional[Sequence[int]] = None,
) -> Tuple[int, int, int]:
    """Widths (Dq, Dk, Dv) of the Q/K/V projections from multipliers or explicit dims.

    Args:
        channels: C, the input width.
        multipliers: (mq, mk, mv): the widths are C // m (each m must divide C).
        dims: (Dq, Dk, Dv) given directly. Exactly one of ``multipliers``/``dims`` is given.

    Returns:
        (Dq, Dk, Dv).

    Raises:
        ValueError: both or neither given, a wrong length, or a multiplier not dividing C.
    """
    if (multipliers is None) == (dims is None):
        raise ValueError(
            f"attention_dims: give exactly one of multipliers={multipliers!r} and dims={dims!r}."
        )
    values = tuple(multipliers if dims is None else dims)
    if len(values) != 3 or any(int(v) != v or v < 1 for v in values):
        raise ValueError(
            f"attention_dims: expected three positive ints (Q, K, V), got {values!r}."
        )
    if dims is not None:
        return tuple(int(v) for v in values)
    for m in values:
        if channels % m != 0:
            raise ValueError(
                f"attention_dims: multiplier {m} does not divide channels={channels} "
                f"(multipliers={values!r})."
            )
    return tuple(channels // int(m) for m in values)


class NonLocalBlock(nn.Module):
    """Multi-head non-local block with a residual (v1), or cross-attention to ``context`` (v3).

    See the module docstring for the topology. Weights: the 1x1 convs keep PyTorch's default
    init with zero biases; ``gamma`` (when ``weighted_residual``) starts at 0, so the block
    is then the identity map at initialisation (before its optional norm/activation).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        multipliers: Optional[Sequence[int]] = (1, 1, 1),
        dims: Optional[Sequence[int]] = None,
        num_heads: int = 1,
        weighted_residual: bool = False,
        norm: str = "",
        activation: bool = False,
        context_channels: Optional[int] = None,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            in_channels: C of ``x`` (and of the output).
            multipliers: (mq, mk, mv), widths C // m; ignored when ``dims`` is given.
            dims: explicit (Dq, Dk, Dv); Dq must equal Dk.
            num_heads: attention heads; must divide Dq and Dv.
            weighted_residual: ``y = gamma * O + x`` with a learnable scalar ``gamma``
                initialised to 0 (the log's ``weighed_sum=True``); else ``y = O + x``.
            norm: norm after the residual (a ``NORM`` name, see
                :func:`sephnet.layers.norm.resolve_norm`); "" = none.
            activation: ReLU after the norm (skipped when the norm has its own
                non-linearity, e.g. EvoNormS0).
            context_channels: width of the ``context`` map of the v3 form (defaults to C).
            norm_groups, norm_eps: parameters of sephnet's norms (EvoNormS0).
        """
        super().__init__()
        dq, dk, dv = attention_dims(
            in_channels, multipliers=None if dims is not None else multipliers, dims=dims
        )
        if dq != dk:
            raise ValueError(f"NonLocalBlock: query width {dq} != key width {dk}; they must match.")
        if num_heads < 1 or dq % num_heads or dv % num_heads:
            raise ValueError(
                f"NonLocalBlock: num_heads={num_heads} must be >= 1 and divide the query "
                f"width {dq} and the value width {dv}."
            )
        ctx = in_channels if context_channels is None else context_channels
        self.num_heads = num_heads
        self.query = nn.Conv2d(in_channels, dq, 1)
        self.key = nn.Conv2d(ctx, dk, 1)
        self.value = nn.Conv2d(ctx, dv, 1)
        self.out = nn.Conv2d(dv, in_channels, 1)
        for conv in (self.query, self.key, self.value, self.out):
            nn.init.zeros_(conv.bias)
        self.gamma = nn.Parameter(torch.zeros(())) if weighted_residual else None
        self.norm = build_norm(norm, in_channels, groups=norm_groups, eps=norm_eps)
        self.relu = activation and not norm_includes_activation(norm)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]``, the map attended from (and the residual).
            context: optional ``Tensor[N, Cctx, h, w]`` giving keys and values (v3); ``x``
                itself when None (v1).

        Returns:
            ``Tensor[N, C, H, W]``.
        """
        if context is None:
            context = x
        n, _, h, w = x.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [N, D, a, b] -> [N, heads, a*b, D/heads]
            d, positions = t.shape[1], t.shape[2] * t.shape[3]  # explicit: N may be 0
            return t.flatten(2).reshape(n, heads, d // heads, positions).transpose(2, 3)

        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        scale = 1.0 / math.sqrt(v.shape[-1])  # per-head V width (the original's choice)
        attn = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * scale, dim=-1)
        o = torch.matmul(attn, v)  # [N, heads, HW, Dv/heads]
        o = o.transpose(2, 3).reshape(n, heads * v.shape[-1], h, w)
        o = self.out(o)
        y = x + (self.gamma * o if self.gamma is not None else o)
        if self.norm is not None:
            y = self.norm(y)
        if self.relu:
            y = torch.relu(y)
        return y


class PositionalNonLocalBlock(NonLocalBlock):
    """:class:`NonLocalBlock` with a learned positional embedding (the log's ``non_local_blockv4``).

    An embedding ``P[1, C, H, W]`` (one vector per position of a fixed grid, initialised
    N(0, 0.02^2)) is added to the input, then the block attends within ``x + P``::

        x' = x + P;  y = act(norm(x' + out(attention(Q(x'), K(x'), V(x')))))

    Self-attention only (the original's v4 has no context map). Inputs must have exactly
    the grid size.
    """

    def __init__(self, in_channels: int, *, size: Tuple[int, int], **kwargs):
        """
        Args:
            in_channels: C.
            size: (H, W) of the positional grid.
            kwargs: the keyword arguments of :class:`NonLocalBlock`.
        """
        super().__init__(in_channels, **kwargs)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"PositionalNonLocalBlock: size={size!r}; expected (H, W) >= 1.")
        self.size = (int(size[0]), int(size[1]))
        self.pos_embedding = nn.Parameter(torch.randn(1, in_channels, *self.size) * 0.02)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[N, C, H, W]`` with ``(H, W)`` the embedding grid.
            context: must be None (no cross-attention form).

        Returns:
            ``Tensor[N, C, H, W]``.
        """
        if context is not None:
            raise ValueError("PositionalNonLocalBlock attends within x only; got a context map.")
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(
                f"PositionalNonLocalBlock: x has spatial size {tuple(x.shape[-2:])}, "
                f"expected the embedding grid {self.size}."
            )
        return super().forward(x + self.pos_embedding)
