"""The size-expert box head (docs/components.md#box-heads; log rows sephv14_20, sephv14_20_1).

::

    proposals --BoxSizeROIPooler--> SizedFeatures(x[R, C, S, S], sizes[R] = sqrt(area) px)
    expert index e = clip(floor(size / size_step), 0, E - 1)       (log: E = 4, step 16 px:
                                                                    <16, 16-32, 32-48, >=48)
    for each expert e, on its ROIs only:
        cls tower (FCs) -> cls_e [R_e, fc_dim];  box tower (convs) -> box_e [R_e, conv_dim, S, S]
    scatter back to proposal order -> cls [R, fc_dim], box [R, conv_dim, S, S]
    [stacked_linear: one shared pair of linear maps, cls -> K + 1, flatten(box) -> 4K (or 4)]
    --> DecoupledFeatures(cls, box)  --> the predictor

Each expert is the "sephv2" towers of :class:`~sephnet.modeling.roi_heads.box_heads.conv_fc_heads.
FCClsConvBoxHead` (no IoU tower). ``stacked_linear`` reproduces the log's quirk
(docs/components.md#conventions): the original put the experts' own shared linear layers inside the
head *and* kept the default predictor, so two linear maps ran in a row; sephnet's default (off)
leaves only the
predictor's (same capacity class, no redundant linear product).

The head needs the proposal sizes, so it declares ``input_kind = "box_sizes"`` and
``SephStandardROIHeads`` wraps its pooler in :class:`BoxSizeROIPooler`.
"""
from typing import Dict, List, NamedTuple

import torch
from torch import nn

from sephnet.backend import Boxes, ShapeSpec, configurable
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_tower import ConvFCTower, norm_kwargs_from_config
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures

__all__ = ["SizedFeatures", "BoxSizeROIPooler", "SizeExpertHead", "expert_index"]


class SizedFeatures(NamedTuple):
    """Pooled ROI features ``x[R, C, S, S]`` with each ROI's box size ``sizes[R]`` (px)."""

    features: torch.Tensor
    sizes: torch.Tensor


class BoxSizeROIPooler(nn.Module):
    """An ``ROIPooler`` whose output also carries ``sqrt(box area)`` per ROI."""

    def __init__(self, pooler: nn.Module):
        """
        Args:
            pooler: the ``ROIPooler`` doing the pooling (kept as ``self.pooler``).
        """
        super().__init__()
        self.pooler = pooler

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> SizedFeatures:
        """
        Args:
            x, box_lists: as ``ROIPooler.forward``.

        Returns:
            ``SizedFeatures(x[R, C, S, S], sizes[R])`` in the concatenated box order.
        """
        areas = [b.area() for b in box_lists]
        sizes = torch.cat(areas).clamp(min=0).sqrt() if areas else x[0].new_zeros(0)
        return SizedFeatures(self.pooler(x, box_lists), sizes)


def expert_index(sizes: torch.Tensor, num_experts: int, size_step: float) -> torch.Tensor:
    """``clip(floor(sizes / size_step), 0, num_experts - 1)`` as int64 ``[R]``."""
    return torch.clamp(torch.floor(sizes / size_step), 0, num_experts - 1).long()


@SEPH_BOX_HEAD_REGISTRY.register()
class SizeExpertHead(nn.Module):
    """E sephv2 experts, each ROI routed by its box size; see the module docstring.

    ``state_dict``: ``experts.{e}.cls_tower.*``, ``experts.{e}.box_tower.*`` and, with
    ``stacked_linear``, ``cls_linear.*`` / ``box_linear.*``.
    """

    #: What the head reads: pooled features with box sizes (``BoxSizeROIPooler``).
    input_kind = "box_sizes"
    reads_decoupled = False
    normed_widths = ()

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_fc: int,
        fc_dim: int,
        num_conv: int,
        conv_dim: int,
        num_experts: int = 4,
        size_step: float = 16.0,
        stacked_linear: bool = False,
        num_classes: int = 80,
        box_dim: int = 4 * 80,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        relu_after_norm: bool = False,
    ):
        """
        Args:
            input_shape: pooled features ``ShapeSpec(channels=C, height=S, width=S)``.
            num_fc, fc_dim: each expert's cls tower FCs (>= 1) and width.
            num_conv, conv_dim: each expert's box tower convs (>= 1) and width.
            num_experts: E >= 1.
            size_step: px of sqrt(area) per expert bin (> 0).
            stacked_linear: add the shared linear maps (cls -> ``num_classes + 1``,
                box -> ``box_dim``) inside the head (the log's literal quirk).
            num_classes, box_dim: K and the box output width (4K, or 4 class-agnostic) of
                those maps; unused without ``stacked_linear``.
            norm, norm_groups, norm_eps: the towers' norm (as FCClsConvBoxHead).

        Raises:
            ValueError: a count or size outside the ranges above.
        """
        super().__init__()
        if num_fc < 1 or num_conv < 1:
            raise ValueError(
                f"SizeExpertHead: num_fc={num_fc} and num_conv={num_conv}; each expert needs "
                ">= 1 FC (cls tower) and >= 1 conv (box tower)."
            )
        if num_experts < 1 or not size_step > 0:
            raise ValueError(
                f"SizeExpertHead: num_experts={num_experts} (>= 1) and size_step={size_step} "
                "(> 0 px) expected."
            )
        norms = dict(
            norm=norm, norm_groups=norm_groups, norm_eps=norm_eps, relu_after_norm=relu_after_norm
        )
        experts = []
        for _ in range(num_experts):
            expert = nn.Module()
            expert.cls_tower = ConvFCTower(
                input_shape, num_conv=0, conv_dim=conv_dim, num_fc=num_fc, fc_dim=fc_dim, **norms
            )
            expert.box_tower = ConvFCTower(
                input_shape, num_conv=num_conv, conv_dim=conv_dim, num_fc=0, fc_dim=fc_dim, **norms
            )
            experts.append(expert)
        self.experts = nn.ModuleList(experts)
        self.num_experts, self.size_step = int(num_experts), float(size_step)
        cls_shape = experts[0].cls_tower.output_shape
        box_shape = experts[0].box_tower.output_shape
        self.cls_linear = self.box_linear = None
        if stacked_linear:
            box_in = box_shape.channels * box_shape.height * box_shape.width
            self.cls_linear = nn.Linear(cls_shape.channels, num_classes + 1)
            self.box_linear = nn.Linear(box_in, box_dim)
            cls_shape, box_shape = ShapeSpec(channels=num_classes + 1), ShapeSpec(channels=box_dim)
        self._shapes = {"cls": cls_shape, "box": box_shape}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head, node = cfg.MODEL.SEPH.BOX_HEAD, cfg.MODEL.SEPH.SIZE_EXPERT_HEAD
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        agnostic = cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
        return {
            "input_shape": input_shape,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "num_conv": head.NUM_CONV,
            "conv_dim": head.CONV_DIM,
            "num_experts": node.NUM_EXPERTS,
            "size_step": node.SIZE_STEP,
            "stacked_linear": node.STACKED_LINEAR,
            "num_classes": num_classes,
            "box_dim": 4 if agnostic else 4 * num_classes,
            **norm_kwargs_from_config(cfg),
        }

    def forward(self, x: SizedFeatures) -> DecoupledFeatures:
        """
        Args:
            x: ``SizedFeatures(features[R, C, S, S], sizes[R])``.

        Returns:
            ``DecoupledFeatures(cls, box)`` with the shapes of :attr:`output_shapes`.
        """
        if not isinstance(x, SizedFeatures):
            raise TypeError(
                "SizeExpertHead reads SizedFeatures(features, sizes) from BoxSizeROIPooler "
                f"(built by SephStandardROIHeads for this head); got {type(x).__name__}."
            )
        feats, sizes = x
        index = expert_index(sizes, self.num_experts, self.size_step)
        r = feats.shape[0]
        first = self.experts[0]
        cls_out = feats.new_zeros((r,) + self._tower_shape(first.cls_tower))
        box_out = feats.new_zeros((r,) + self._tower_shape(first.box_tower))
        for e, expert in enumerate(self.experts):
            rows = torch.nonzero(index == e).flatten()
            if rows.numel() == 0:
                continue
            sub = feats[rows]
            cls_out = cls_out.index_copy(0, rows, expert.cls_tower(sub))
            box_out = box_out.index_copy(0, rows, expert.box_tower(sub))
        if self.cls_linear is not None:
            cls_out = self.cls_linear(cls_out)
            box_out = self.box_linear(box_out.flatten(1))
        return DecoupledFeatures(cls=cls_out, box=box_out)

    @staticmethod
    def _tower_shape(tower: ConvFCTower):
        s = tower.output_shape
        return (s.channels,) if s.height is None else (s.channels, s.height, s.width)

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``"cls"`` and ``"box"``: the experts' tower outputs, or the stacked linear widths."""
        return dict(self._shapes)
