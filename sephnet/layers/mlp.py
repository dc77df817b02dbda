"""A plain multi-layer perceptron (Linear + ReLU between layers, none after the last)."""
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """``in_dim -> hidden_dim -> ... -> out_dim`` over the last axis, ``num_layers`` Linears.

    Sub-modules are ``0, 2, 4, ...`` (Linears) with ReLUs between them; the last Linear's
    output is returned as is (callers apply their own output function).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        if num_layers < 1:
            raise ValueError(f"MLP: num_layers={num_layers}; expected >= 1.")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        super().__init__(*layers)
