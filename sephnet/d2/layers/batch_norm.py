"""Normalisation layers and the ``get_norm`` name lookup used by every config ``NORM`` key.

Names accepted by :func:`get_norm` (detectron2's set): ``""``/``None`` (no norm), ``"BN"``,
``"SyncBN"``, ``"FrozenBN"``, ``"GN"`` (32 groups), ``"nnSyncBN"``, ``"naiveSyncBN"``,
``"naiveSyncBN_N"`` and ``"LN"`` (channel-wise layer norm), or any callable
``channels -> nn.Module``.
"""
from typing import Callable, Dict, Optional, Union

import torch
import torch.distributed as dist
from fvcore.nn.distributed import differentiable_all_reduce
from torch import nn
from torch.nn import functional as F

from .wrappers import BatchNorm2d

__all__ = ["FrozenBatchNorm2d", "get_norm", "NaiveSyncBatchNorm", "LayerNorm", "CycleBatchNormList"]


class FrozenBatchNorm2d(nn.Module):
    """Batch norm whose statistics and affine parameters are constant buffers.

    Buffers (all ``Tensor[C]``): ``weight``, ``bias``, ``running_mean``, ``running_var``.
    The output is ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``. Fresh
    buffers are an identity map (``running_var`` starts at ``1 - eps``). Checkpoints from
    Caffe2 hold only ``weight``/``bias`` (the folded affine); loading such a state dict,
    marked with a version below 2, keeps the identity statistics and does not report
    them missing.

    Forward: Tensor[N, C, H, W] -> Tensor[N, C, H, W], same dtype.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            # One fused kernel when no autograd graph is needed.
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
            )
        # With autograd, F.batch_norm would also build gradients for the frozen buffers;
        # a plain affine map is cheaper and gives the same values.
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Old (Caffe2-converted) checkpoints have no statistics: keep them neutral.
            state_dict.setdefault(prefix + "running_mean", torch.zeros_like(self.running_mean))
            state_dict.setdefault(prefix + "running_var", torch.ones_like(self.running_var))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a frozen copy.

        Args:
            module: any module.

        Returns:
            A new ``FrozenBatchNorm2d`` when ``module`` itself is a batch norm; otherwise
            ``module``, whose children were replaced in place.
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features)
            if module.affine:
                frozen.weight.data = module.weight.data.clone().detach()
                frozen.bias.data = module.bias.data.clone().detach()
            frozen.running_mean.data = module.running_mean.data
            frozen.running_var.data = module.running_var.data
            frozen.eps = module.eps
            return frozen
        for name, child in module.named_children():
            converted = cls.convert_frozen_batchnorm(child)
            if converted is not child:
                module.add_module(name, converted)
        return module


class NaiveSyncBatchNorm(BatchNorm2d):
    """Synchronised batch norm built from an all-reduce of per-worker moments.

    With one process, or in eval mode, this is exactly ``nn.BatchNorm2d``. In distributed
    training, the per-channel mean and mean of squares are averaged over workers:

    * ``stats_mode=""``: every worker has equal weight (exact when all workers have the
      same N, H, W); a zero-sized batch is an error.
    * ``stats_mode="N"``: workers are weighted by their batch size N (exact when all have
      the same H, W); zero-sized batches are allowed and contribute nothing.

    Forward: Tensor[N, C, H, W] -> Tensor[N, C, H, W].
    """

    def __init__(self, *args, stats_mode: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        if stats_mode not in ("", "N"):
            raise ValueError(f"NaiveSyncBatchNorm: stats_mode must be '' or 'N', got {stats_mode!r}")
        self._stats_mode = stats_mode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world_size == 1 or not self.training:
            return super().forward(input)

        batch, channels = input.shape[0], input.shape[1]
        is_half = input.dtype == torch.float16
        if is_half:  # the moment reduction needs more precision than fp16 has
            input = input.float()
        mean = input.mean(dim=[0, 2, 3])
        mean_sq = (input * input).mean(dim=[0, 2, 3])

        if self._stats_mode == "":
            if batch == 0:
                raise ValueError('NaiveSyncBatchNorm(stats_mode="") cannot handle an empty batch; use "N"')
            moments = differentiable_all_reduce(torch.cat([mean, mean_sq])) * (1.0 / world_size)
            mean, mean_sq = torch.split(moments, channels)
            momentum = self.momentum
        else:
            if batch == 0:
                # Zero moments, but still connected to the (empty) input for autograd.
                local = torch.zeros(2 * channels + 1, device=mean.device, dtype=mean.dtype) + input.sum()
            else:
                local = torch.cat([mean, mean_sq, torch.ones(1, device=mean.device, dtype=mean.dtype)])
            total = differentiable_all_reduce(local * batch)
            total_batch = total[-1].detach()
            momentum = total_batch.clamp(max=1) * self.momentum  # no update when nobody had data
            mean, mean_sq, _ = torch.split(total / total_batch.clamp(min=1), channels)

        var = mean_sq - mean * mean
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        self.running_mean += momentum * (mean.detach() - self.running_mean)
        self.running_var += momentum * (var.detach() - self.running_var)
        out = input * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        return out.half() if is_half else out


class CycleBatchNormList(nn.ModuleList):
    """``length`` affine-free BatchNorms used in turn, with one shared affine transform.

    A head applied to L feature levels calls its norm L times per forward; giving each
    call its own statistics ("domain-specific" BN, Wu & Johnson, "Rethinking BatchNorm",
    sec. 5.2) keeps one level's statistics out of another's. Call k uses ``self[k % length]``,
    so callers must call a multiple of ``length`` times per step. State dict: ``<i>.running_*``
    per level and the shared ``weight``/``bias`` (C) unless ``affine=False``.

    Args:
        length: number of BatchNorm layers to cycle through.
        bn_class: the BatchNorm class (e.g. ``nn.BatchNorm2d``, ``nn.SyncBatchNorm``).
        kwargs: passed to ``bn_class`` (``num_features`` ...); ``affine`` (default True)
            controls the shared affine transform instead.
    """

    def __init__(self, length: int, bn_class=nn.BatchNorm2d, **kwargs):
        affine = kwargs.pop("affine", True)
        super().__init__([bn_class(affine=False, **kwargs) for _ in range(length)])
        self._affine = affine
        if affine:
            channels = self[0].num_features
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self._pos = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W), normalised by the next BatchNorm in the cycle."""
        out = self[self._pos](x)
        self._pos = (self._pos + 1) % len(self)
        if self._affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"affine={self._affine}"


class LayerNorm(nn.Module):
    """Layer norm over the channel dimension of an NCHW tensor (as used by ConvNeXt).

    Parameters: ``weight``, ``bias`` (Tensor[C]). Each spatial position is normalised
    over its C channels: ``(x - mean_c) / sqrt(var_c + eps) * weight + bias`` with the
    biased variance.

    Forward: Tensor[N, C, H, W] -> Tensor[N, C, H, W].
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        normed = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * normed + self.bias[:, None, None]


def _norm_factories() -> Dict[str, Callable[[int], nn.Module]]:
    return {
        "BN": BatchNorm2d,
        # nn.SyncBatchNorm has handled unequal per-worker batches correctly since torch 1.6.
        "SyncBN": nn.SyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "GN": lambda channels: nn.GroupNorm(32, channels),
        "nnSyncBN": nn.SyncBatchNorm,
        "naiveSyncBN": NaiveSyncBatchNorm,
        # stats_mode "N" tolerates workers with empty batches.
        "naiveSyncBN_N": lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
        "LN": lambda channels: LayerNorm(channels),
    }


def get_norm(norm: Union[str, Callable[[int], nn.Module], None], out_channels: int) -> Optional[nn.Module]:
    """Build the normalisation layer named by a config ``NORM`` value.

    Args:
        norm: ``""`` or ``None`` for no normalisation, one of the names listed in this
            module's docstring, or a callable ``channels -> nn.Module``.
        out_channels: the number of channels C to normalise.

    Returns:
        The module, or ``None`` for no normalisation.

    Raises:
        KeyError: for an unknown name (a ``ValueError`` would break callers that catch
            detectron2's ``KeyError``); the message lists the valid names.
        TypeError: when ``norm`` is neither a string nor callable.
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if norm == "":
            return None
        factories = _norm_factories()
        if norm not in factories:
            raise KeyError(f"get_norm: unknown norm {norm!r}; expected '' or one of {sorted(factories)} or a callable")
        norm = factories[norm]
    elif not callable(norm):
        raise TypeError(f"get_norm: norm must be a str or a callable, got {type(norm).__name__}")
    return norm(out_channels)
