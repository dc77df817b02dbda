"""Decoupled ("seph") box heads: separate towers for classification and box regression.

Every head here is registered in ``SEPH_BOX_HEAD_REGISTRY`` and selected by
``MODEL.SEPH.BOX_HEAD.NAME``. Contract (see
:mod:`sephnet.modeling.roi_heads.decoupled_features`): ``forward(x[R, C, S, S])`` returns
a :class:`DecoupledFeatures` ``(cls, box, iou)``, and ``output_shapes`` is a dict of
``ShapeSpec`` with the keys ``"cls"``, ``"box"`` (and ``"iou"`` when the head has an IoU
tower). ``R = 0`` works.

Heads (docs/components.md#box-heads; the log's names in brackets):

* :class:`TwinTowerConvFCHead` ["seph", SeparateFastRCNNConvFCHead]: two identical towers
  (preset :class:`ValidConvFCHead`: VALID widening convs, "V3");
* :class:`FCClsConvBoxHead` ["sephv2", SeparateFastRCNNConvFCHeadV2]: FC tower for
  classes, conv tower for boxes, optional IoU tower;
* :class:`~sephnet.modeling.roi_heads.box_heads.shared_conv_head.SharedConvHead` ["sephv10 shared
  head", FastRCNNConvHead];
* :class:`~sephnet.modeling.roi_heads.box_heads.upstream_box_head.UpstreamBoxHead`: detectron2's
  single-output head, so baseline configs run through the sephnet path.

The package `__init__` imports every head module (registration).
"""
from typing import Dict

import torch
from torch import nn

from sephnet.backend import ShapeSpec, configurable
from sephnet.modeling.registry import SEPH_BOX_HEAD_REGISTRY
from sephnet.modeling.roi_heads.box_heads.conv_fc_tower import ConvFCTower, norm_kwargs_from_config
from sephnet.modeling.roi_heads.decoupled_features import DecoupledFeatures, split_head_input


__all__ = ["TwinTowerConvFCHead", "ValidConvFCHead", "FCClsConvBoxHead"]


@SEPH_BOX_HEAD_REGISTRY.register()
class TwinTowerConvFCHead(nn.Module):
    """Two identical, independent conv/FC towers: the log's "seph" head.

    ::

                        +-- cls_tower: num_conv x conv3x3(conv_dim)+norm+act
                        |              [-> flatten -> num_fc x FC(fc_dim)+norm+act] --> cls
        x[R, C, S, S] --+
                        +-- box_tower: same layers, own weights ----------------------> box

    Output: ``[R, fc_dim]`` when ``num_fc > 0``, else ``[R, conv_dim, S, S]``; no IoU
    tower (a predictor with an IoU branch reads ``box``). Log presets of this one class:
    "seph" and "two 4xconv head" (sephv14_34/37/40/41/44) = 4 convs, 0 FC; "two 2xfc
    head" (sephv14_35/38) = 0 convs, 2 FCs.

    ``state_dict``: ``cls_tower.*`` and ``box_tower.*``, each as :class:`ConvFCTower`.
    With ``padding=0`` and a ``width_step`` it is the "V3" head (preset
    :class:`ValidConvFCHead`).
    """

    #: Reads one pooled map (and a hook's DecoupledFeatures / the ContextPair positionally).
    input_kind = "pooled"
    reads_decoupled = True
    #: (width key, count key) of MODEL.SEPH.BOX_HEAD: widths its norm sees when count > 0.
    normed_widths = (("CONV_DIM", "NUM_CONV"), ("FC_DIM", "NUM_FC"))

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
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
    ):
        """
        Args:
            input_shape: the pooled ROI features, ``ShapeSpec(channels=C, height=S,
                width=S)``.
            num_conv, conv_dim: 3x3 SAME convs per tower and their width.
            num_fc, fc_dim: FC layers per tower and their width.
            norm: norm after every conv and FC ("" = none, then a ReLU follows each layer instead).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
            relu_after_norm: a ReLU after norms without their own non-linearity too
                (``MODEL.SEPH.BOX_HEAD.RELU_AFTER_NORM``; the original: none).
            padding, width_step: the convs' padding (1 SAME, 0 VALID) and widening, as
                :class:`ConvFCTower`.

        Raises:
            ValueError: a tower would have no layer (``num_conv + num_fc == 0``), or as
                :class:`ConvFCTower`.
        """
        super().__init__()
        if num_conv + num_fc < 1:
            raise ValueError(
                f"{type(self).__name__}: num_conv={num_conv} and num_fc={num_fc}; each tower "
                "needs at least one layer."
            )
        tower = dict(
            num_conv=num_conv,
            conv_dim=conv_dim,
            num_fc=num_fc,
            fc_dim=fc_dim,
            norm=norm,
            norm_groups=norm_groups,
            norm_eps=norm_eps,
            relu_after_norm=relu_after_norm,
            padding=padding,
            width_step=width_step,
        )
        self.cls_tower = ConvFCTower(input_shape, **tower)
        self.box_tower = ConvFCTower(input_shape, **tower)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.SEPH.BOX_HEAD
        return {
            "input_shape": input_shape,
            "num_conv": head.NUM_CONV,
            "conv_dim": head.CONV_DIM,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            **norm_kwargs_from_config(cfg),
        }

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """
        Args:
            x: pooled ROI features ``Tensor[R, C, S, S]``, or an ROI hook's
                ``DecoupledFeatures(cls_in, box_in, iou_in)`` (each tower reads its field).

        Returns:
            ``DecoupledFeatures(cls, box, None)`` with the shapes of :attr:`output_shapes`.
        """
        cls_in, box_in, _ = split_head_input(x)
        return DecoupledFeatures(cls=self.cls_tower(cls_in), box=self.box_tower(box_in))

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``{"cls": ShapeSpec, "box": ShapeSpec}`` of the two towers' outputs."""
        return {"cls": self.cls_tower.output_shape, "box": self.box_tower.output_shape}


@SEPH_BOX_HEAD_REGISTRY.register()
class ValidConvFCHead(TwinTowerConvFCHead):
    """Preset of :class:`TwinTowerConvFCHead` ("V3"; not in the log): VALID convs widening by
    ``width_step`` (64 in the original, no config key)::

        tower: conv 3x3 VALID, conv_dim + 1 * width_step -> norm -> act     S   -> S-2
               conv 3x3 VALID, conv_dim + 2 * width_step -> norm -> act     S-2 -> S-4
               ... num_conv convs (log default 3: 7 -> 5 -> 3 -> 1)
               -> flatten -> num_fc x FC(fc_dim) + norm + act

    Output ``[R, fc_dim]`` per tower (``[R, conv_dim + num_conv * width_step, S', S']`` when
    ``num_fc == 0``).
    """

    normed_widths = ()  # the widened convs are not CONV_DIM wide; not checked

    @configurable
    def __init__(self, *, width_step: int = 64, **kwargs):
        """Keyword arguments as :class:`TwinTowerConvFCHead` (``padding`` is 0)."""
        super().__init__(padding=0, width_step=width_step, **kwargs)


@SEPH_BOX_HEAD_REGISTRY.register()
class FCClsConvBoxHead(nn.Module):
    """FC tower for classification, conv tower for boxes: the log's "sephv2" workhorse.

    ::

                      +-- cls_tower: flatten -> num_fc x FC(fc_dim)+norm+act --> cls [R, fc_dim]
                      |
      x[R, C, S, S] --+-- box_tower: num_conv x conv3x3(conv_dim)+norm+act
                      |                                        --> box [R, conv_dim, S, S]
                      +-- iou_tower (optional): iou_num_conv x conv3x3(conv_dim)+norm+act
                                   [-> flatten -> iou_num_fc x FC(fc_dim)+norm+act] --> iou

    The box tower keeps the spatial layout (the predictor flattens it). The IoU tower reads
    the pooled input, like the box tower, not the box tower's output. Log values: 2 FC of
    1024 and 4 convs of 256 in every sephv2-based row (sephv14_22/23/31: convs of 1024);
    IoU tower 0 conv + 2 FC (sephv3/4/4_1/6/8, iou1) or 4 conv + 0 FC (iou2/4/5/6/7).

    ``state_dict``: ``cls_tower.fc{j}.*``, ``box_tower.conv{i}.*``, ``iou_tower.*``.
    """

    input_kind = "pooled"
    reads_decoupled = True
    normed_widths = (("CONV_DIM", None), ("FC_DIM", None))  # None: always built

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        num_fc: int,
        fc_dim: int,
        num_conv: int,
        conv_dim: int,
        iou_tower: bool = False,
        iou_num_conv: int = 0,
        iou_num_fc: int = 2,
        norm: str = "",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        relu_after_norm: bool = False,
    ):
        """
        Args:
            input_shape: the pooled ROI features, ``ShapeSpec(channels=C, height=S,
                width=S)``.
            num_fc, fc_dim: FC layers of the classification tower and their width.
            num_conv, conv_dim: 3x3 SAME convs of the box tower and their width.
            iou_tower: build the IoU tower (the IoU branch is on).
            iou_num_conv, iou_num_fc: its convs (width ``conv_dim``) and FCs (width
                ``fc_dim``); ignored when ``iou_tower`` is False.
            norm: norm after every conv and FC ("" = none, then a ReLU follows each layer instead).
            norm_groups, norm_eps: groups and epsilon of sephnet's norms (EvoNormS0).
            relu_after_norm: a ReLU after norms without their own non-linearity too
                (``MODEL.SEPH.BOX_HEAD.RELU_AFTER_NORM``; the original: none).

        Raises:
            ValueError: ``num_fc`` or ``num_conv`` is 0 (that tower would be empty), the
                IoU tower is on with no layer, or as :class:`ConvFCTower`.
        """
        super().__init__()
        for name, count in (("num_fc", num_fc), ("num_conv", num_conv)):
            if count == 0:
                raise ValueError(
                    f"FCClsConvBoxHead: {name}=0 leaves a tower empty; expected >= 1."
                )
        if iou_tower and iou_num_conv + iou_num_fc < 1:
            raise ValueError(
                f"FCClsConvBoxHead: the IoU tower is on but iou_num_conv={iou_num_conv} and "
                f"iou_num_fc={iou_num_fc}; it needs at least one layer."
            )
        norms = dict(
            norm=norm, norm_groups=norm_groups, norm_eps=norm_eps, relu_after_norm=relu_after_norm
        )
        self.cls_tower = ConvFCTower(
            input_shape, num_conv=0, conv_dim=conv_dim, num_fc=num_fc, fc_dim=fc_dim, **norms
        )
        self.box_tower = ConvFCTower(
            input_shape, num_conv=num_conv, conv_dim=conv_dim, num_fc=0, fc_dim=fc_dim, **norms
        )
        self.iou_tower = None
        if iou_tower:
            self.iou_tower = ConvFCTower(
                input_shape,
                num_conv=iou_num_conv,
                conv_dim=conv_dim,
                num_fc=iou_num_fc,
                fc_dim=fc_dim,
                **norms,
            )

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.SEPH.BOX_HEAD
        return {
            "input_shape": input_shape,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "num_conv": head.NUM_CONV,
            "conv_dim": head.CONV_DIM,
            # The IoU branch is the predictor's component; its switch decides the tower.
            "iou_tower": cfg.MODEL.SEPH.IOU_BRANCH.ENABLED,
            "iou_num_conv": head.IOU_NUM_CONV,
            "iou_num_fc": head.IOU_NUM_FC,
            **norm_kwargs_from_config(cfg),
        }

    def forward(self, x: torch.Tensor) -> DecoupledFeatures:
        """
        Args:
            x: pooled ROI features ``Tensor[R, C, S, S]``, or an ROI hook's
                ``DecoupledFeatures(cls_in, box_in, iou_in)`` (each tower reads its field;
                the IoU tower reads ``box_in`` when ``iou_in`` is None).

        Returns:
            ``DecoupledFeatures(cls[R, fc_dim], box[R, conv_dim, S, S], iou)``; ``iou`` is
            None without the IoU tower.
        """
        cls_in, box_in, iou_in = split_head_input(x)
        iou = self.iou_tower(iou_in) if self.iou_tower is not None else None
        return DecoupledFeatures(cls=self.cls_tower(cls_in), box=self.box_tower(box_in), iou=iou)

    @property
    def output_shapes(self) -> Dict[str, ShapeSpec]:
        """``"cls"``, ``"box"`` and, with the IoU tower, ``"iou"`` output shapes."""
        shapes = {"cls": self.cls_tower.output_shape, "box": self.box_tower.output_shape}
        if self.iou_tower is not None:
            shapes["iou"] = self.iou_tower.output_shape
        return shapes
