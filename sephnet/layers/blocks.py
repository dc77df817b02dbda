"""Config-free conv/FC + norm + activation building blocks for sephnet's heads.

Both blocks follow the order of the experiment log's layers (SEPH_SPEC B §0.2):
linear map -> norm -> activation, with no bias on the linear map when a norm follows, and
no ReLU when the norm already contains a non-linearity (EvoNormS0; the log's activation
"NA"). Norms are given by config name and resolved with
:func:`sephnet.layers.norm.resolve_norm`, so ``"EvoNormS0"`` works next to detectron2's names.

Weights keep PyTorch's default initialisation; heads apply their own (e.g. detectron2's
``c2_msra_fill`` for convs and ``c2_xavier_fill`` for FCs).
"""
from typing import Optional

import torch
from torch import nn

from sephnet.backend import Conv2d
from sephnet.layers.norm import get_norm, norm_includes_activation

__all__ = ["conv_norm_act", "FCNormAct"]


def _activation(norm: str, activation: bool) -> Optional[nn.Module]:
    if activation and not norm_includes_activation(norm):
        return nn.ReLU()
    return None


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    padding: Optional[int] = None,
    norm: str = "",
    activation: bool = True,
    norm_groups: int = 32,
    norm_eps: float = 1e-5,
) -> nn.Module:
    """A detectron2 ``Conv2d`` carrying its norm and activation.

    ``x[N, Cin, H, W] -> conv -> norm -> ReLU -> y[N, Cout, H', W']``; the conv has a bias
    only when ``norm`` is ``""``, and the ReLU is left out when ``activation`` is False or
    the norm includes its own non-linearity. State-dict names are detectron2's:
    ``weight``, ``bias``, ``norm.*``.

    Args:
        in_channels, out_channels: Cin and Cout.
        kernel_size, stride: of the conv.
        padding: defaults to ``kernel_size // 2`` (the log's "SAME" for odd kernels and
            stride 1); 0 gives "VALID".
        norm: a ``NORM`` config value (see :func:`sephnet.layers.norm.resolve_norm`).
        activation: append a ReLU (unless the norm has its own non-linearity).
        norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).

    Returns:
        The ``Conv2d`` module.
    """
    norm_layer = get_norm(norm, out_channels, groups=norm_groups, eps=norm_eps)
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=kernel_size // 2 if padding is None else padding,
        bias=norm_layer is None,
        norm=norm_layer,
        activation=_activation(norm, activation),
    )


class FCNormAct(nn.Linear):
    """A fully connected layer carrying its norm and activation, like detectron2's ``Conv2d``.

    ``x[R, Din] (or x[R, C, S, S] with C*S*S = Din, flattened) -> linear -> norm -> ReLU ->
    y[R, Dout]``. The linear map has a bias only when ``norm`` is ``""``; the ReLU is left out
    when ``activation`` is False or the norm includes its own non-linearity.

    The norm sees the FC output as ``[R, Dout, 1, 1]``, so every 2-D norm works on it: "GN"
    and EvoNormS0 then normalise over each group's channels (the log's 2-D GN / EvoNorm),
    "BN" over the ROIs of the batch. State-dict names: ``weight``, ``bias``, ``norm.*``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        norm: str = "",
        activation: bool = True,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            in_features, out_features: Din and Dout.
            norm: a ``NORM`` config value (see :func:`sephnet.layers.norm.resolve_norm`).
            activation: append a ReLU (unless the norm has its own non-linearity).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
        """
        norm_layer = get_norm(norm, out_features, groups=norm_groups, eps=norm_eps)
        if getattr(norm_layer, "needs_spatial_extent", False):
            raise ValueError(
                f"FCNormAct: norm {norm!r} takes statistics over H x W, which an FC output "
                "lacks; use it on conv layers only."
            )
        super().__init__(in_features, out_features, bias=norm_layer is None)
        self.norm = norm_layer
        self.activation = _activation(norm, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[R, Din]`` or ``Tensor[R, C, S, S]`` with C*S*S = Din; R may be 0.

        Returns:
            ``Tensor[R, Dout]``.
        """
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x[:, :, None, None]).flatten(start_dim=1)
        if self.activation is not None:
            x = self.activation(x)
        return x
