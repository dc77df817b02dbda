"""A cosine-similarity classifier layer (docs/components.md#predictor-and-losses; TFA-style few-shot
detection)."""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CosineLinear"]


class CosineLinear(nn.Module):
    """Logits = scale * cos(feature, class weight), both vectors L2-normalised.

    ::

        x[R, D] --L2 normalise rows--.
                                      >-- x_hat @ w_hat^T --> * scale --> logits[R, C]
        weight[C, D] --L2 normalise---'

    Every output column, including detectron2's background column (the last one when
    ``out_features = K + 1``), goes through the same cosine path: there is no separate
    bias or linear background logit. So ``|logit| <= scale`` and multiplying a feature
    vector by a positive constant leaves its logits unchanged. A zero feature vector
    gives zero logits (the normalisation divides by ``max(norm, 1e-12)``).

    The layer has no bias. ``scale`` is a buffer (fixed, default 20 as in TFA) or, with
    ``learnable_scale``, a parameter initialised to ``scale``. Both are stored under the
    state_dict key ``scale``, so checkpoints move between the two settings.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        scale: float = 20.0,
        learnable_scale: bool = False,
    ):
        """
        Args:
            in_features: D, the feature size.
            out_features: C, the number of classes (K + 1 with background).
            scale: the logit scale (the inverse temperature); must be > 0.
            learnable_scale: train ``scale`` with the rest of the model.
        """
        super().__init__()
        if not scale > 0:
            raise ValueError(f"CosineLinear scale={scale!r}; expected a number > 0.")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        # The init only sets directions (the weights are normalised), so any isotropic
        # distribution works; this one matches detectron2's classifier init.
        nn.init.normal_(self.weight, std=0.01)
        scale_tensor = torch.tensor(float(scale))
        if learnable_scale:
            self.scale = nn.Parameter(scale_tensor)
        else:
            self.register_buffer("scale", scale_tensor)

    @property
    def learnable_scale(self) -> bool:
        return isinstance(self.scale, nn.Parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: float ``[R, D]``.

        Returns:
            float ``[R, C]`` logits in ``[-scale, scale]``.
        """
        cosine = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        return self.scale * cosine

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"scale={self.scale.item():g}, learnable_scale={self.learnable_scale}"
        )
