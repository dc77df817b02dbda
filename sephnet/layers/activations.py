"""Head activations by config name, and swapping a built head's ReLUs for one of them.

``MODEL.SEPH.HEAD_ACTIVATION.NAME`` selects the non-linearity of the ROI heads (the survey's
Mish / Swish / hard-swish). The heads keep building ``nn.ReLU`` modules;
:func:`replace_relu` then swaps every ``nn.ReLU`` submodule, which covers sephnet's blocks,
detectron2's ``Conv2d(activation=...)`` and the ``fc_relu`` / ``deconv_relu`` modules of
detectron2's heads, without a new argument in every head. The functions are PyTorch's:

* ``"Mish"``: ``x * tanh(softplus(x))``;
* ``"Swish"``: ``x * sigmoid(x)`` (SiLU);
* ``"HardSwish"``: ``x * relu6(x + 3) / 6``.
"""
from typing import Callable, Dict

from torch import nn

__all__ = ["HEAD_ACTIVATIONS", "build_activation", "replace_relu"]

#: Values of ``MODEL.SEPH.HEAD_ACTIVATION.NAME`` and the module each builds.
HEAD_ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "ReLU": nn.ReLU,
    "Mish": nn.Mish,
    "Swish": nn.SiLU,
    "HardSwish": nn.Hardswish,
}


def build_activation(name: str) -> nn.Module:
    """A new activation module for ``name`` (a key of :data:`HEAD_ACTIVATIONS`).

    Raises:
        ValueError: unknown ``name``; the message lists the known ones.
    """
    if name not in HEAD_ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; expected one of {list(HEAD_ACTIVATIONS)}.")
    return HEAD_ACTIVATIONS[name]()


def replace_relu(module: nn.Module, name: str) -> int:
    """Replace every ``nn.ReLU`` submodule of ``module`` by a new ``build_activation(name)``.

    Activations have no parameters, so the state dict is unchanged. ReLUs applied as
    functions (``F.relu``) inside a ``forward`` are not modules and are not replaced.

    Returns:
        How many modules were replaced (0 when the layers' norms carry their own
        non-linearity, e.g. EvoNormS0 or FRN).
    """
    build_activation(name)  # rejects unknown names, even when there is nothing to replace
    replaced = 0
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, child_name, build_activation(name))
                replaced += 1
    return replaced
