"""Thin wrappers around ``torch.nn`` pieces that detectron2's layer API exposes.

``Conv2d`` carries an optional norm and activation (stored as the attributes ``norm`` and
``activation``, so a normalised conv has state_dict keys ``<name>.weight`` and
``<name>.norm.*``). The helpers make empty tensors and single-element lists cheap and safe.
"""
import functools
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "shapes_to_tensor",
    "cat",
    "empty_input_loss_func_wrapper",
    "cross_entropy",
    "Conv2d",
    "ConvTranspose2d",
    "BatchNorm2d",
    "interpolate",
    "Linear",
    "nonzero_tuple",
    "move_device_like",
]


def shapes_to_tensor(x: Sequence[Union[int, torch.Tensor]], device: Optional[torch.device] = None) -> torch.Tensor:
    """Turn a list of ints (or 0-d integer tensors) into a 1-d tensor.

    While tracing, the entries are expected to be scalar tensors and are stacked so that
    the result stays connected to the traced inputs instead of becoming a constant.

    Args:
        x: the sizes, e.g. ``[H, W]``.
        device: where to put the result.

    Returns:
        Tensor[len(x)] (int64 for int inputs).
    """
    if torch.jit.is_tracing() and not torch.jit.is_scripting():
        if not all(isinstance(t, torch.Tensor) for t in x):
            raise TypeError("shapes_to_tensor: while tracing, every size must be a Tensor")
        stacked = torch.stack(list(x))
        return stacked if stacked.device == device or device is None else stacked.to(device)
    return torch.as_tensor(x, device=device)


def cat(tensors: Union[List[torch.Tensor], Tuple[torch.Tensor, ...]], dim: int = 0) -> torch.Tensor:
    """``torch.cat`` that returns the only element of a one-element list without copying.

    Args:
        tensors: a list or tuple of tensors with equal shapes except along ``dim``.
        dim: the dimension to concatenate.

    Returns:
        The concatenation (the very same tensor object when ``len(tensors) == 1``).
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat expects a list or tuple of tensors, got {type(tensors).__name__}")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def empty_input_loss_func_wrapper(loss_func: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a ``loss_func(input, target, *, reduction=..., **kw)`` so that an empty target
    with ``reduction="mean"`` gives ``input.sum() * 0`` (a zero that keeps the graph
    connected) instead of NaN.
    """

    @functools.wraps(loss_func)
    def wrapped(input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean", **kwargs) -> torch.Tensor:
        if target.numel() == 0 and reduction == "mean":
            return input.sum() * 0.0
        return loss_func(input, target, reduction=reduction, **kwargs)

    return wrapped


cross_entropy = empty_input_loss_func_wrapper(F.cross_entropy)
cross_entropy.__doc__ = """``F.cross_entropy`` that returns a connected 0 (not NaN) for an empty mean.

Args:
    input: Tensor[R, K] logits.
    target: Tensor[R] int64 class indices.
    reduction: "mean" | "sum" | "none".

Returns:
    The loss, as ``F.cross_entropy``; ``input.sum() * 0`` when ``target`` is empty and
    ``reduction == "mean"``.
"""


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with an optional normalisation layer and activation applied after it.

    Extra keyword arguments on top of ``nn.Conv2d``'s:

    * ``norm`` (nn.Module | None): applied to the conv output; stored as ``self.norm``.
    * ``activation`` (callable | None): applied after the norm; stored as ``self.activation``.

    Forward: Tensor[N, C_in, H, W] -> Tensor[N, C_out, H', W']. A zero-sized batch works.
    """

    def __init__(self, *args, **kwargs):
        norm = kwargs.pop("norm", None)
        activation = kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0 and self.training and isinstance(self.norm, nn.SyncBatchNorm):
            raise ValueError("Conv2d: SyncBatchNorm cannot normalise an empty batch in training mode")
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


ConvTranspose2d = nn.ConvTranspose2d
BatchNorm2d = nn.BatchNorm2d
interpolate = F.interpolate
Linear = nn.Linear


def nonzero_tuple(x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``x.nonzero(as_tuple=True)``, also usable under TorchScript.

    Returns:
        One int64 index tensor per dimension of ``x`` (for a 0-d input, one tensor).
    """
    if torch.jit.is_scripting():
        flat = x.unsqueeze(0) if x.dim() == 0 else x
        return flat.nonzero().unbind(1)
    return x.nonzero(as_tuple=True)


def move_device_like(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Return ``src`` moved to ``dst``'s device (no copy when it is already there)."""
    return src.to(dst.device)
