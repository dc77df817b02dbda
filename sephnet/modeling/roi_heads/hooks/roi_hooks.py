"""ROI-head hooks: transforms of the pooled ROI features before the box head (SEPH_SPEC B §2.13).

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
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.layers.cbam import CBAM
from sephnet.layers.non_local import NonLocalBlock, PositionalNonLocalBlock
from sephnet.layers.norm import get_norm
from sephnet.layers.squeeze_excite import SqueezeExcite
from sephnet.modeling.registry import SEPH_ROI_HOOK_REGISTRY, get_registered
from sephnet.layers.cross_attention import CrossAttention
from sephnet.modeling.roi_heads.decoupled_features import ContextPair, DecoupledFeatures

__all__ = [
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
    "VALID_VERSIONS",
]

# (positional embedding, (mq, mk, mv), heads) of each non-local form the hooks use.
_V1 = (False, (8, 8, 2), 1)
_POS_1_4 = (True, (1, 1, 1), 4)
_POS_2_2 = (True, (2, 2, 2), 2)
_PLAIN_1_1 = (False, (1, 1, 1), 1)

#: Versions each hook accepts (``MODEL.SEPH.ROI_HOOK.VERSION``).
VALID_VERSIONS: Dict[str, Tuple[int, ...]] = {
    "NonLocalROIHeadsHook": (1,),
    "OneHeadNonLocalROIHeadsHook": (1, 2, 3),
    "ClsNonLocalROIHeadsHook": (1, 2, 3, 4),
    "BoxNonLocalROIHeadsHook": (1, 2),
    "IouHeadNonLocalROIHeadsHook": (1,),
    "SEROIHeadsHook": (1,),
    "ClsSEROIHeadsHook": (1,),
    "OneHeadSEROIHeadsHook": (1,),
    "OneHeadCBAMROIHeadsHook": (1,),
}


def _check_version(name: str, version: int) -> int:
    if version not in VALID_VERSIONS[name]:
        raise ValueError(
            f"{name}: version={version!r}; expected one of {VALID_VERSIONS[name]} "
            "(MODEL.SEPH.ROI_HOOK.VERSION)."
        )
    return version


def _plain_input(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} reads pooled features Tensor[R, C, S, S]; got {type(x).__name__} (the "
            "multi-scale pooler's ContextPair is read only by IouHeadNonLocalROIHeadsHook)."
        )
    return x


def _non_local(
    form: Tuple[bool, Sequence[int], int],
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


def _common_from_config(cfg, input_shape: ShapeSpec) -> dict:
    node = cfg.MODEL.SEPH.ROI_HOOK
    return {
        "input_shape": input_shape,
        "version": node.VERSION,
        "weighted_residual": node.WEIGHTED_RESIDUAL,
        "norm": node.NORM,
        "norm_groups": cfg.MODEL.SEPH.EVONORM.GROUPS,
        "norm_eps": cfg.MODEL.SEPH.EVONORM.EPS,
    }


class _NonLocalHook(nn.Module):
    """Shared constructor of the non-local hooks: ``version`` picks the block form."""

    output_kind = "tensor"
    accepts_context_pair = False
    _FORMS: Dict[int, Tuple[bool, Sequence[int], int]] = {}

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        version: int = 1,
        weighted_residual: bool = False,
        norm: str = "EvoNormS0",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shape: pooled features ``ShapeSpec(channels=C, height=S, width=S)``; C must
                be divisible by the block's multipliers (8 for version 1), S fixes the
                positional grid.
            version: the hook version (see the module table).
            weighted_residual: ``y = norm(gamma * O + x)`` with gamma initialised to 0 (the
                pre-2020-10-30 blocks) instead of ``norm(O + x)``.
            norm: norm after the residual ("" = none; the log: "EvoNormS0").
            norm_groups, norm_eps: parameters of sephnet's group norms (EvoNormS0).
        """
        super().__init__()
        name = type(self).__name__
        self.version = _check_version(name, version)
        self.input_shape = input_shape
        block_kwargs = dict(
            weighted_residual=weighted_residual,
            norm=norm,
            norm_groups=norm_groups,
            norm_eps=norm_eps,
        )
        form = self._FORMS[self.version]
        self._build(lambda: _non_local(form, input_shape, **block_kwargs))

    def _build(self, make_block: Callable[[], NonLocalBlock]) -> None:
        """Create the hook's blocks; ``make_block()`` returns a new block of its version."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return _common_from_config(cfg, input_shape)


@SEPH_ROI_HOOK_REGISTRY.register()
class NonLocalROIHeadsHook(_NonLocalHook):
    """Two separate non-local v1 blocks (8, 8, 2): one for each tower (sephv7, sephv14_7/44).

    ::

        x[R, C, S, S] --+-- non_local_cls --> cls_in [R, C, S, S]
                        +-- non_local_box --> box_in [R, C, S, S]
    """

    output_kind = "decoupled"
    _FORMS = {1: _V1}

    def _build(self, make_block):
        self.cls_block = make_block()
        self.box_block = make_block()

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """``x[R, C, S, S]`` -> ``DecoupledFeatures(cls_in, box_in)``, each ``[R, C, S, S]``."""
        x = _plain_input(type(self).__name__, x)
        return DecoupledFeatures(cls=_run(self.cls_block, x), box=_run(self.box_block, x))


@SEPH_ROI_HOOK_REGISTRY.register()
class OneHeadNonLocalROIHeadsHook(_NonLocalHook):
    """One non-local block shared by both towers: ``x[R, C, S, S] -> block -> [R, C, S, S]``.

    Version 1 (sephv14_14/19/31/32/42/43_2, sephv30_1, ...): v1 (8, 8, 2); version 2
    (sephv14_17, sephv14_43_3): positional, (1, 1, 1), 4 heads; version 3 (sephv14_18): v1
    (1, 1, 1), 1 head.
    """

    _FORMS = {1: _V1, 2: _POS_1_4, 3: _PLAIN_1_1}

    def _build(self, make_block):
        self.block = make_block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[R, C, S, S]`` -> ``[R, C, S, S]``."""
        return _run(self.block, _plain_input(type(self).__name__, x))


@SEPH_ROI_HOOK_REGISTRY.register()
class ClsNonLocalROIHeadsHook(_NonLocalHook):
    """Non-local on the classification input only; the box tower reads the raw features.

    ::

        x[R, C, S, S] --+-- block [-> * 2 * SE gate (version 4)] --> cls_in [R, C, S, S]
                        +------------------------------------------> box_in = x

    Versions: 1 (sephv14_15) v1 (8, 8, 2); 2 (sephv14_43_4) positional (1, 1, 1), 4 heads;
    3 positional (2, 2, 2), 2 heads; 4 = version 2 then ``cls_in * 2 * SE(cls_in) gate``.
    """

    output_kind = "decoupled"
    _FORMS = {1: _V1, 2: _POS_1_4, 3: _POS_2_2, 4: _POS_1_4}

    def _build(self, make_block):
        self.block = make_block()
        self.se = SqueezeExcite(self.input_shape.channels, ratio=16) if self.version == 4 else None

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """``x[R, C, S, S]`` -> ``DecoupledFeatures(cls_in, box_in=x)``."""
        x = _plain_input(type(self).__name__, x)
        cls_in = _run(self.block, x)
        if self.se is not None:
            cls_in = 2.0 * self.se(cls_in)  # SE returns cls_in * gate
        return DecoupledFeatures(cls=cls_in, box=x)


@SEPH_ROI_HOOK_REGISTRY.register()
class BoxNonLocalROIHeadsHook(_NonLocalHook):
    """Non-local on the box input only (sephv14_16): ``(cls_in = x, box_in = block(x))``.

    Versions: 1 v1 (8, 8, 2); 2 positional (1, 1, 1), 4 heads.
    """

    output_kind = "decoupled"
    _FORMS = {1: _V1, 2: _POS_1_4}

    def _build(self, make_block):
        self.block = make_block()

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """``x[R, C, S, S]`` -> ``DecoupledFeatures(cls_in=x, box_in)``."""
        x = _plain_input(type(self).__name__, x)
        return DecoupledFeatures(cls=x, box=_run(self.block, x))


@SEPH_ROI_HOOK_REGISTRY.register()
class IouHeadNonLocalROIHeadsHook(nn.Module):
    """Non-local features for the IoU tower only (iou5, iou6).

    ::

        single map:  x[R, C, S, S] --> (x, x, non-local v1 (8, 8, 2)(x))
        ContextPair: (box[R, C, S, S], context[R, C, M, M])
                     --> (box, box, norm(attention(Q = box, K = V = context)))   no residual

    The box head's IoU tower then reads the third field (``FCClsConvBoxHead``).
    """

    output_kind = "decoupled"

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        with_context: bool = False,
        version: int = 1,
        weighted_residual: bool = False,
        norm: str = "EvoNormS0",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
    ):
        """
        Args:
            input_shape: pooled box features ``ShapeSpec(channels=C, height=S, width=S)``.
            with_context: the input is the multi-scale pooler's ``ContextPair`` (iou5);
                else a single pooled map (iou6).
            version, weighted_residual, norm, norm_groups, norm_eps: as the other non-local
                hooks (``weighted_residual`` applies to the single-map block only: the
                context form has no residual).
        """
        super().__init__()
        self.version = _check_version(type(self).__name__, version)
        self.with_context = bool(with_context)
        self.accepts_context_pair = self.with_context
        if self.with_context:
            c = input_shape.channels
            self.attention = CrossAttention(c, context_channels=c, multipliers=(1, 1, 1))
            self.norm = get_norm(norm, c, groups=norm_groups, eps=norm_eps)
        else:
            self.block = _non_local(
                _V1,
                input_shape,
                weighted_residual=weighted_residual,
                norm=norm,
                norm_groups=norm_groups,
                norm_eps=norm_eps,
            )

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        ret = _common_from_config(cfg, input_shape)
        ret["with_context"] = cfg.MODEL.SEPH.MULTISCALE_POOLER.ENABLED
        return ret

    def forward(self, x: Union[torch.Tensor, ContextPair]) -> DecoupledFeatures:
        """See the class docstring; every field is ``[R, C, S, S]``."""
        name = type(self).__name__
        if self.with_context:
            if not isinstance(x, ContextPair):
                raise TypeError(f"{name} was built for the multi-scale pooler's ContextPair; "
                                f"got {type(x).__name__}.")
            iou_in = self.attention(x.box, x.context)
            if self.norm is not None:
                iou_in = self.norm(iou_in)
            return DecoupledFeatures(cls=x.box, box=x.box, iou=iou_in)
        x = _plain_input(name, x)
        return DecoupledFeatures(cls=x, box=x, iou=_run(self.block, x))


class _SEHook(nn.Module):
    """Shared constructor of the squeeze-excitation / CBAM hooks."""

    output_kind = "tensor"
    accepts_context_pair = False

    @configurable
    def __init__(self, *, input_shape: ShapeSpec, version: int = 1, ratio: int = 16):
        """
        Args:
            input_shape: pooled features ``ShapeSpec(channels=C, height=S, width=S)``.
            version: 1 (the only one).
            ratio: reduction of the gates' hidden FC (16 in the log).
        """
        super().__init__()
        self.version = _check_version(type(self).__name__, version)
        self._build(input_shape.channels, ratio)

    def _build(self, channels: int, ratio: int) -> None:
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        node = cfg.MODEL.SEPH.ROI_HOOK
        return {"input_shape": input_shape, "version": node.VERSION, "ratio": node.SE_RATIO}


@SEPH_ROI_HOOK_REGISTRY.register()
class SEROIHeadsHook(_SEHook):
    """Two SE blocks, one per tower (sephv14_24): ``x -> (SE_cls(x), SE_box(x))``."""

    output_kind = "decoupled"

    def _build(self, channels, ratio):
        self.cls_se = SqueezeExcite(channels, ratio=ratio)
        self.box_se = SqueezeExcite(channels, ratio=ratio)

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """``x[R, C, S, S]`` -> ``DecoupledFeatures(cls_in, box_in)``, each ``[R, C, S, S]``."""
        x = _plain_input(type(self).__name__, x)
        return DecoupledFeatures(cls=self.cls_se(x), box=self.box_se(x))


@SEPH_ROI_HOOK_REGISTRY.register()
class ClsSEROIHeadsHook(_SEHook):
    """SE on the classification input only: ``x -> (SE(x), x)``."""

    output_kind = "decoupled"

    def _build(self, channels, ratio):
        self.se = SqueezeExcite(channels, ratio=ratio)

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """``x[R, C, S, S]`` -> ``DecoupledFeatures(cls_in, box_in=x)``."""
        x = _plain_input(type(self).__name__, x)
        return DecoupledFeatures(cls=self.se(x), box=x)


@SEPH_ROI_HOOK_REGISTRY.register()
class OneHeadSEROIHeadsHook(_SEHook):
    """One SE block shared by both towers (sephv14_25, sephv14_27): ``[R, C, S, S]`` kept."""

    def _build(self, channels, ratio):
        self.se = SqueezeExcite(channels, ratio=ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[R, C, S, S]`` -> ``[R, C, S, S]``."""
        return self.se(_plain_input(type(self).__name__, x))


@SEPH_ROI_HOOK_REGISTRY.register()
class OneHeadCBAMROIHeadsHook(_SEHook):
    """CBAM (the log's variant) shared by both towers (sephv14_28): ``[R, C, S, S]`` kept."""

    def _build(self, channels, ratio):
        self.cbam = CBAM(channels, ratio=ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[R, C, S, S]`` -> ``[R, C, S, S]``."""
        return self.cbam(_plain_input(type(self).__name__, x))


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
