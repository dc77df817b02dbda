"""The conv/FC tower every decoupled box head is built from, and its config reading.

A tower is the experiment log's basic head block (docs/components.md#box-heads)::

    x[R, C, S, S]
      -> num_conv x ( conv 3x3 SAME, conv_dim -> norm | ReLU )    # spatial size kept
      -> num_fc   x ( flatten -> FC, fc_dim   -> norm | ReLU )    # only if num_fc > 0
      -> [R, conv_dim, S, S] (num_fc == 0) or [R, fc_dim] (num_fc > 0)

Each layer is followed by its norm, or by a ReLU when there is no norm, not both: the
original's decoupled heads ran with the activation "NA" (identity) next to every norm the log
used (EvoNormS0, BN, GN), and with its default ReLU only without a norm
(:func:`head_activation`). ``relu_after_norm=True`` (``MODEL.SEPH.BOX_HEAD.RELU_AFTER_NORM``)
adds the ReLU after norms that have no non-linearity of their own.

The FCs may carry another norm than the convs (``fc_norm``: the June baseline's head,
:class:`~sephnet.modeling.roi_heads.box_heads.norm_fc_head.NormFCBoxHead`). With ``padding=0``
the convs are VALID (each takes 2 off S) and with ``width_step`` conv k
(1-based) has ``conv_dim + k * width_step`` channels (the "V3" head).

Layer order and "no bias before a norm" come from the blocks in
:mod:`sephnet.layers.blocks`. Weights use detectron2's initialisation of its box head
(``c2_msra_fill`` for convs, ``c2_xavier_fill`` for FCs) rather than the TF original's
Glorot-uniform: the framework's conventions win (docs/components.md#conventions), and the upstream
adapter head is initialised the same way.
"""
from typing import Any, Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn

from sephnet.backend import ShapeSpec
from sephnet.layers.blocks import FCNormAct, conv_norm_act
from sephnet.layers.norm import norm_includes_activation

__all__ = ["ConvFCTower", "norm_kwargs_from_config", "conv_block", "head_activation"]


def head_activation(norm: str, relu_after_norm: bool = False) -> bool:
    """Whether a decoupled box-head layer with ``norm`` is followed by a ReLU.

    Without a norm, always. After a norm only with ``relu_after_norm`` and a norm without its
    own non-linearity: by default the activation after a norm is the identity, as in every
    log row (BN and GN heads included, not only EvoNormS0).
    """
    return norm == "" or (relu_after_norm and not norm_includes_activation(norm))


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    padding: int,
    norm: str,
    norm_groups: int,
    norm_eps: float,
    relu_after_norm: bool = False,
) -> nn.Module:
    """One 3x3 conv -> norm, or conv -> ReLU without a norm (:func:`head_activation`), MSRA-initialised.

    Args:
        in_channels, out_channels: C_in and C_out.
        padding: 1 = "SAME" (S -> S), 0 = "VALID" (S -> S - 2).
        norm, norm_groups, norm_eps, relu_after_norm: see :class:`ConvFCTower`.

    Returns:
        A detectron2 ``Conv2d`` carrying its norm and activation.
    """
    conv = conv_norm_act(
        in_channels,
        out_channels,
        kernel_size=3,
        padding=padding,
        norm=norm,
        activation=head_activation(norm, relu_after_norm),
        norm_groups=norm_groups,
        norm_eps=norm_eps,
    )
    weight_init.c2_msra_fill(conv)
    return conv


class ConvFCTower(nn.Sequential):
    """``num_conv`` 3x3 convs, then ``num_fc`` FCs, each with its norm (or a ReLU without one).

    ::

        x[R, C, S, S] --conv1..convN--> [R, conv_dim, S, S] --fc1..fcM--> [R, fc_dim]

    (VALID convs, ``padding=0``: ``[R, conv_dim + N * width_step, S - 2N, S - 2N]``.)

    With ``num_conv == num_fc == 0`` the tower is the identity (heads decide whether they
    allow that). The first FC flattens its ``[R, C', S, S]`` input in C, H, W order.
    ``state_dict`` names: ``conv{i}.weight``, ``conv{i}.norm.*``, ``fc{j}.weight``,
    ``fc{j}.norm.*`` (``bias`` only when ``norm`` is ``""``), 1-based like detectron2's
    ``FastRCNNConvFCHead``.
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_conv: int,
        conv_dim: int,
        num_fc: int,
        fc_dim: int,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        relu_after_norm: bool = False,
        padding: int = 1,
        width_step: int = 0,
        fc_norm: Optional[str] = None,
    ):
        """
        Args:
            input_shape: channels C, height and width S of the pooled input; height and
                width are needed when ``num_fc > 0`` or ``padding == 0``.
            num_conv, conv_dim: number and width of the 3x3 convs (count >= 0).
            num_fc, fc_dim: number and width of the FC layers (count >= 0).
            norm: a ``NORM`` config value ("", "BN", "GN", "EvoNormS0", ...), resolved by
                :func:`sephnet.layers.norm.resolve_norm`; "" means no norm (and biases).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
            relu_after_norm: a ReLU after norms without their own non-linearity too.
            padding: 1 = SAME convs, 0 = VALID convs (S must stay >= 1).
            width_step: conv k (1-based) has ``conv_dim + k * width_step`` channels.
            fc_norm: the FCs' norm, as ``norm``; None: ``norm``.

        Raises:
            ValueError: a negative count, a non-positive width, FCs without a known input
                height and width, or more VALID convs than the pooled size allows.
        """
        super().__init__()
        for name, count in (("num_conv", num_conv), ("num_fc", num_fc)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"ConvFCTower: {name}={count!r}; expected an int >= 0.")
        for name, dim, count in (("conv_dim", conv_dim, num_conv), ("fc_dim", fc_dim, num_fc)):
            if count > 0 and (not isinstance(dim, int) or dim < 1):
                raise ValueError(f"ConvFCTower: {name}={dim!r}; expected an int >= 1.")
        channels, height, width = input_shape.channels, input_shape.height, input_shape.width
        if padding == 0 and num_conv and (height is None or min(height, width) - 2 * num_conv < 1):
            raise ValueError(
                f"ConvFCTower: num_conv={num_conv} VALID 3x3 convs need a pooled size > "
                f"{2 * num_conv}; got {height} (MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION)."
            )
        for k in range(num_conv):
            out_channels = conv_dim + (k + 1) * width_step
            self.add_module(
                f"conv{k + 1}",
                conv_block(
                    channels,
                    out_channels,
                    padding=padding,
                    norm=norm,
                    norm_groups=norm_groups,
                    norm_eps=norm_eps,
                    relu_after_norm=relu_after_norm,
                ),
            )
            channels = out_channels
            if padding == 0:
                height, width = height - 2, width - 2
        self._output_shape = ShapeSpec(channels=channels, height=height, width=width)
        if num_fc == 0:
            return
        if height is None or width is None:
            raise ValueError(
                f"ConvFCTower: FC layers need the pooled height and width; got {input_shape}."
            )
        in_features = channels * height * width
        fc_norm = norm if fc_norm is None else fc_norm
        for k in range(num_fc):
            fc = FCNormAct(
                in_features,
                fc_dim,
                norm=fc_norm,
                activation=head_activation(fc_norm, relu_after_norm),
                norm_groups=norm_groups,
                norm_eps=norm_eps,
            )
            weight_init.c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            in_features = fc_dim
        self._output_shape = ShapeSpec(channels=fc_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``Tensor[R, C, S, S]``; R may be 0.

        Returns:
            ``Tensor[R, conv_dim, S, S]`` without FCs, else ``Tensor[R, fc_dim]``.
        """
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        """Shape of the output: channels (and height, width when there is no FC)."""
        return self._output_shape


def norm_kwargs_from_config(cfg) -> Dict[str, Any]:
    """The box heads' norm arguments from a config.

    Reads ``MODEL.ROI_BOX_HEAD.NORM`` (the upstream key, reused: "EvoNormS0" is resolved by
    sephnet), for sephnet's group-wise norms ``MODEL.SEPH.EVONORM.GROUPS`` / ``.EPS``, and
    ``MODEL.SEPH.BOX_HEAD.RELU_AFTER_NORM``.

    Returns:
        ``{"norm": str, "norm_groups": int, "norm_eps": float, "relu_after_norm": bool}``.
    """
    return {
        "norm": cfg.MODEL.ROI_BOX_HEAD.NORM,
        "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
        "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
        "relu_after_norm": cfg.MODEL.SEPH.BOX_HEAD.RELU_AFTER_NORM,
    }
