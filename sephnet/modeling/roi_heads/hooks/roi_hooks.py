"""ROI-head hooks: transforms of the pooled ROI features before the box head
(docs/components.md#roi-hooks).

Selected by ``MODEL.SEPH.ROI_HOOK.NAME`` ("" = none) from ``SEPH_ROI_HOOK_REGISTRY``;
``SephStandardROIHeads`` wraps its box head as ``HookedBoxHead(hook, head)``::

    pooled x[R, C, S, S] (or the multi-scale pooler's ContextPair)
        --hook--> x'[R, C, S, S]                       (``output_kind == "tensor"``)
               or DecoupledFeatures(cls_in, box_in[, iou_in])   (``"decoupled"``)
        --box head--> DecoupledFeatures(cls, box[, iou]) --> predictor

Every hook keeps ``[R, C, S, S]`` per output. Hooks (log names; versions by
``MODEL.SEPH.ROI_HOOK.VERSION``):

=====================================  =====  ==========================================
hook                                   ver.   computes
=====================================  =====  ==========================================
NonLocalROIHeadsHook                   1      two non-local v1 (8,8,2), one per tower
OneHeadNonLocalROIHeadsHook            1      one non-local v1 (8,8,2) shared
                                       2      positional non-local (1,1,1), 4 heads
                                       3      non-local v1 (1,1,1), 1 head
ClsNonLocalROIHeadsHook                1      non-local v1 (8,8,2) on cls_in; box_in = x
                                       2      positional (1,1,1), 4 heads, on cls_in
                                       3      positional (2,2,2), 2 heads, on cls_in
                                       4      version 2, then cls_in * 2 * SE gate
BoxNonLocalROIHeadsHook                1, 2   as Cls 1, 2 on box_in; cls_in = x
IouHeadNonLocalROIHeadsHook            1      (x, x, non-local v1 (8,8,2)(x)); with the
                                              multi-scale pooler (box, box,
                                              attention(Q=box, K=V=context)) (no residual)
SEROIHeadsHook / ClsSEROIHeadsHook     1      two SE (r=16) / SE on cls_in only
OneHeadSEROIHeadsHook                  1      one shared SE
OneHeadCBAMROIHeadsHook                1      CBAM (log variant, :mod:`sephnet.layers.cbam`)
=====================================  =====  ==========================================

Non-local blocks are ``sephnet.layers.NonLocalBlock`` / ``PositionalNonLocalBlock`` with the
hook norm (``MODEL.SEPH.ROI_HOOK.NORM``, the log's EvoNormS0 G=32) after the residual and no
activation; ``WEIGHTED_RESIDUAL`` gives the pre-2020-10-30 "gamma" residual (gamma init 0).
ClsNonLocal version 5 (``non_local_blockv5``, not in the log) is not offered.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.cbam import CBAM
from sephnet.layers.cross_attention import CrossAttention
from sephnet.layers.non_local import NonLocalBlock, PositionalNonLocalBlock
from sephnet.layers.norm import build_norm
from sephnet.layers.squeeze_excite import SqueezeExcite
from sephnet.modeling.registry import SEPH_ROI_HOOK_REGISTRY, get_registered
from sephnet.modeling.roi_heads.decoupled_features import ContextPair, DecoupledFeatures

__all__ = [
    "ROIHook",
    "HookPreset",
    "ROI_HOOK_PRESETS",
    "NonLocalROIHeadsHook",
    "OneHeadNonLocalROIHeadsHook",
    "ClsNonLocalROIHeadsHook",
    "BoxNonLocalROIHeadsHook",
    "IouHeadNonLocalROIHeadsHook",
    "SEROIHeadsHook",
    "ClsSEROIHeadsHook",
    "OneHeadSEROIHeadsHook",
    "OneHeadCBAMROIHeadsHook",
    "HookedBoxHead",
    "build_roi_hook",
]

# (positional embedding, (mq, mk, mv), heads) of each non-local form the hooks use.
NonLocalForm = Tuple[bool, Sequence[int], int]
_V1 = (False, (8, 8, 2), 1)
_POS_1_4 = (True, (1, 1, 1), 4)
_POS_2_2 = (True, (2, 2, 2), 2)
_PLAIN_1_1 = (False, (1, 1, 1), 1)
# Reduction of the SE gate after ClsNonLocal version 4 (fixed in the original, not SE_RATIO).
_GATE_RATIO = 16


@dataclass(frozen=True)
class HookPreset:
    """What one registered hook name builds; its properties are the hook's capabilities.

    Attributes:
        block: the block kind, "non_local", "se" or "cbam".
        targets: ``(attribute, field)`` pairs: a block stored as ``attribute`` (its
            ``state_dict`` prefix) computes ``field`` of the output from the pooled map:
            "all" (the hook returns the block's tensor), or "cls" / "box" / "iou" (a field of
            ``DecoupledFeatures``; fields no block computes are the pooled map itself, "iou"
            None).
        versions: ``MODEL.SEPH.ROI_HOOK.VERSION`` values -> the non-local form (None for
            SE/CBAM).
        gated_versions: versions that multiply ``cls`` by ``2 * SE gate`` after the block.
    """

    block: str
    targets: Tuple[Tuple[str, str], ...]
    versions: Dict[int, Optional[NonLocalForm]]
    gated_versions: Tuple[int, ...] = ()

    @property
    def output_kind(self) -> str:
        """"tensor" (one map for both towers) or "decoupled" (``DecoupledFeatures``)."""
        return "tensor" if self.targets[0][1] == "all" else "decoupled"

    @property
    def reads_context_pair(self) -> bool:
        """Whether it reads the multi-scale pooler's ``ContextPair`` (the IoU-field hook)."""
        return any(field == "iou" for _, field in self.targets)


#: The log's hook names and what each builds (see the module table).
ROI_HOOK_PRESETS: Dict[str, HookPreset] = {
    "NonLocalROIHeadsHook": HookPreset(
        "non_local", (("cls_block", "cls"), ("box_block", "box")), {1: _V1}),
    "OneHeadNonLocalROIHeadsHook": HookPreset(
        "non_local", (("block", "all"),), {1: _V1, 2: _POS_1_4, 3: _PLAIN_1_1}),
    "ClsNonLocalROIHeadsHook": HookPreset(
        "non_local", (("block", "cls"),), {1: _V1, 2: _POS_1_4, 3: _POS_2_2, 4: _POS_1_4},
        gated_versions=(4,)),
    "BoxNonLocalROIHeadsHook": HookPreset(
        "non_local", (("block", "box"),), {1: _V1, 2: _POS_1_4}),
    "IouHeadNonLocalROIHeadsHook": HookPreset("non_local", (("block", "iou"),), {1: _V1}),
    "SEROIHeadsHook": HookPreset("se", (("cls_se", "cls"), ("box_se", "box")), {1: None}),
    "ClsSEROIHeadsHook": HookPreset("se", (("se", "cls"),), {1: None}),
    "OneHeadSEROIHeadsHook": HookPreset("se", (("se", "all"),), {1: None}),
    "OneHeadCBAMROIHeadsHook": HookPreset("cbam", (("cbam", "all"),), {1: None}),
}


def _plain_input(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} reads pooled features Tensor[R, C, S, S]; got {type(x).__name__} (the "
            "multi-scale pooler's ContextPair is read only by IouHeadNonLocalROIHeadsHook)."
        )
    return x


def _non_local(
    form: NonLocalForm,
    shape: ShapeSpec,
    *,
    weighted_residual: bool,
    norm: str,
    norm_groups: int,
    norm_eps: float,
) -> NonLocalBlock:
    positional, multipliers, heads = form
    kwargs = dict(
        multipliers=multipliers,
        num_heads=heads,
        weighted_residual=weighted_residual,
        norm=norm,
        activation=False,
        norm_groups=norm_groups,
        norm_eps=norm_eps,
    )
    if positional:
        return PositionalNonLocalBlock(shape.channels, size=(shape.height, shape.width), **kwargs)
    return NonLocalBlock(shape.channels, **kwargs)


def _run(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)``; with no ROIs (R = 0) the shape-preserving result is ``x`` itself."""
    return x if x.shape[0] == 0 else block(x)


class ROIHook(nn.Module):
    """One ROI hook, parameterised by a :class:`HookPreset` (``preset``, a registered name).

    Every block keeps ``[R, C, S, S]``. With ``with_context`` (the IoU-field preset and the
    multi-scale pooler on) the input is a ``ContextPair(box[R, C, S, S], context[R, C, M,
    M])`` and the IoU field is ``norm(attention(Q = box, K = V = context))``, no residual
    (``state_dict``: ``attention.*``, ``norm.*``); cls and box are the box crop.

    ``state_dict``: one entry per ``preset.targets`` attribute, plus ``se.*`` for a gated
    version.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        preset: str,
        version: int = 1,
        weighted_residual: bool = False,
        norm: str = "EvoNormS0",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        ratio: int = 16,
        with_context: bool = False,
    ):
        """
        Args:
            input_shape: pooled features ``ShapeSpec(channels=C, height=S, width=S)``; C must
                be divisible by the non-local multipliers (8 for version 1), S fixes the
                positional grid.
            preset: a key of :data:`ROI_HOOK_PRESETS` (the registered name).
            version: the hook version (see the module table).
            weighted_residual: non-local blocks compute ``y = norm(gamma * O + x)`` with
                gamma initialised to 0 (the pre-2020-10-30 blocks) instead of ``norm(O + x)``.
            norm: norm after the non-local residual ("" = none; the log: "EvoNormS0").
            norm_groups, norm_eps: parameters of sephnet's group norms (EvoNormS0).
            ratio: reduction of the SE / CBAM gates' hidden FC (16 in the log).
            with_context: read the multi-scale pooler's ``ContextPair`` (iou5); only for a
                preset that computes the IoU field.

        Raises:
            ValueError: an unknown preset, a version the preset lacks, or ``with_context``
                for a preset that cannot read the crop pair.
        """
        super().__init__()
        if preset not in ROI_HOOK_PRESETS:
            raise ValueError(f"ROIHook: preset={preset!r}; expected one of {sorted(ROI_HOOK_PRESETS)}.")
        spec = ROI_HOOK_PRESETS[preset]
        if version not in spec.versions:
            raise ValueError(
                f"{preset}: version={version!r}; expected one of {tuple(spec.versions)} "
                "(MODEL.SEPH.ROI_HOOK.VERSION)."
            )
        if with_context and not spec.reads_context_pair:
            raise ValueError(f"{preset} cannot read the multi-scale pooler's ContextPair.")
        self.preset, self.version, self.with_context = preset, version, bool(with_context)
        self.input_shape = input_shape
        c = input_shape.channels
        if self.with_context:
            self.attention = CrossAttention(c, context_channels=c, multipliers=(1, 1, 1))
            self.norm = build_norm(norm, c, groups=norm_groups, eps=norm_eps)
            return
        for attribute, _ in spec.targets:
            if spec.block == "non_local":
                block = _non_local(
                    spec.versions[version],
                    input_shape,
                    weighted_residual=weighted_residual,
                    norm=norm,
                    norm_groups=norm_groups,
                    norm_eps=norm_eps,
                )
            elif spec.block == "se":
                block = SqueezeExcite(c, ratio=ratio)
            else:
                block = CBAM(c, ratio=ratio)
            setattr(self, attribute, block)
        self.gated = version in spec.gated_versions
        if self.gated:
            self.se = SqueezeExcite(c, ratio=_GATE_RATIO)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, *, preset: str):
        node = cfg.MODEL.SEPH.ROI_HOOK
        reads_pair = ROI_HOOK_PRESETS[preset].reads_context_pair
        return {
            "input_shape": input_shape,
            "preset": preset,
            "version": node.VERSION,
            "weighted_residual": node.WEIGHTED_RESIDUAL,
            "norm": node.NORM,
            "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
            "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
            "ratio": node.SE_RATIO,
            "with_context": reads_pair and cfg.MODEL.SEPH.MULTISCALE_POOLER.ENABLED,
        }

    @property
    def output_kind(self) -> str:
        """The preset's :attr:`HookPreset.output_kind`."""
        return ROI_HOOK_PRESETS[self.preset].output_kind

    def forward(self, x: Union[torch.Tensor, ContextPair]):
        """
        Args:
            x: pooled ``Tensor[R, C, S, S]``, or a ``ContextPair`` when built with
                ``with_context``.

        Returns:
            ``Tensor[R, C, S, S]`` (``output_kind == "tensor"``) or
            ``DecoupledFeatures(cls, box, iou)``, each ``[R, C, S, S]`` (``iou`` may be None).
        """
        if self.with_context:
            if not isinstance(x, ContextPair):
                raise TypeError(f"{self.preset} was built for the multi-scale pooler's "
                                f"ContextPair; got {type(x).__name__}.")
            iou_in = self.attention(x.box, x.context)
            if self.norm is not None:
                iou_in = self.norm(iou_in)
            return DecoupledFeatures(cls=x.box, box=x.box, iou=iou_in)
        x = _plain_input(self.preset, x)
        spec = ROI_HOOK_PRESETS[self.preset]
        if spec.output_kind == "tensor":
            return _run(getattr(self, spec.targets[0][0]), x)
        fields = {"cls": x, "box": x, "iou": None}
        for attribute, field in spec.targets:
            fields[field] = _run(getattr(self, attribute), x)
        if self.gated:
            fields["cls"] = 2.0 * self.se(fields["cls"])  # SE returns cls * gate
        return DecoupledFeatures(**fields)


def _register_preset(build: Callable[..., ROIHook]) -> Callable[..., ROIHook]:
    """Register ``build`` under its name with the capabilities every registered hook declares
    (read by config validation): ``output_kind``, ``versions``, ``reads_context_pair``."""
    spec = ROI_HOOK_PRESETS[build.__name__]
    build.output_kind = spec.output_kind
    build.versions = tuple(spec.versions)
    build.reads_context_pair = spec.reads_context_pair
    SEPH_ROI_HOOK_REGISTRY.register(build)
    return build


# The registered names (the log's): each builds ROIHook with its preset; called like
# ROIHook, either ``(cfg, input_shape)`` or with keyword arguments.


@_register_preset
def NonLocalROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """Two non-local v1 blocks (8, 8, 2), one per tower (sephv7, sephv14_7/44)."""
    return ROIHook(*args, preset="NonLocalROIHeadsHook", **kwargs)


@_register_preset
def OneHeadNonLocalROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """One non-local block shared by both towers (versions 1-3; sephv14_14/17/18/...)."""
    return ROIHook(*args, preset="OneHeadNonLocalROIHeadsHook", **kwargs)


@_register_preset
def ClsNonLocalROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """Non-local on the cls input only, box input raw (sephv14_15, sephv14_43_4)."""
    return ROIHook(*args, preset="ClsNonLocalROIHeadsHook", **kwargs)


@_register_preset
def BoxNonLocalROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """Non-local on the box input only, cls input raw (sephv14_16)."""
    return ROIHook(*args, preset="BoxNonLocalROIHeadsHook", **kwargs)


@_register_preset
def IouHeadNonLocalROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """Non-local (or context cross-attention) features for the IoU tower only (iou5, iou6)."""
    return ROIHook(*args, preset="IouHeadNonLocalROIHeadsHook", **kwargs)


@_register_preset
def SEROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """Two SE blocks, one per tower (sephv14_24)."""
    return ROIHook(*args, preset="SEROIHeadsHook", **kwargs)


@_register_preset
def ClsSEROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """SE on the cls input only, box input raw (not in the log)."""
    return ROIHook(*args, preset="ClsSEROIHeadsHook", **kwargs)


@_register_preset
def OneHeadSEROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """One SE block shared by both towers (sephv14_25, sephv14_27)."""
    return ROIHook(*args, preset="OneHeadSEROIHeadsHook", **kwargs)


@_register_preset
def OneHeadCBAMROIHeadsHook(*args, **kwargs) -> ROIHook:  # noqa: N802
    """CBAM (the log's variant) shared by both towers (sephv14_28)."""
    return ROIHook(*args, preset="OneHeadCBAMROIHeadsHook", **kwargs)


class HookedBoxHead(nn.Module):
    """A box head preceded by an ROI hook: ``head(hook(x))``; the head's ``output_shapes``.

    ``state_dict``: ``hook.*`` and ``head.*``.
    """

    def __init__(self, hook: nn.Module, head: nn.Module):
        """
        Args:
            hook: an ROI hook (see the module docstring).
            head: a box head that reads what the hook returns (a sephnet head reads a tensor
                or ``DecoupledFeatures``).
        """
        super().__init__()
        self.hook = hook
        self.head = head

    def forward(self, x):
        """``x``: what the pooler returns; returns the head's ``DecoupledFeatures``."""
        return self.head(self.hook(x))

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """The wrapped head's ``output_shapes``."""
        return self.head.output_shapes


def build_roi_hook(cfg, input_shape: ShapeSpec) -> Optional[nn.Module]:
    """The hook named by ``MODEL.SEPH.ROI_HOOK.NAME`` ("" = None) for ``input_shape``."""
    name = cfg.MODEL.SEPH.ROI_HOOK.NAME
    if not name:
        return None
    hook_cls = get_registered(SEPH_ROI_HOOK_REGISTRY, name, "MODEL.SEPH.ROI_HOOK.NAME")
    return hook_cls(cfg, input_shape)
