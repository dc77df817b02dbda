"""Where the survey's head and backbone regularisers go into a built model.

* :func:`add_dropblock_after_convs`: a :class:`~sephnet.layers.dropblock.DropBlock2d` after
  the norm and activation of every hidden conv of a head (``MODEL.SEPH.DROPBLOCK.HEADS``);
* :func:`add_dropblock_to_stages`: one after whole ResNet stages, e.g. res4 and res5 as in
  the DropBlock paper (``MODEL.SEPH.DROPBLOCK.BACKBONE_STAGES``);
* :func:`apply_head_tricks`: the head activation (``MODEL.SEPH.HEAD_ACTIVATION.NAME``) and
  head DropBlock on the box and mask heads that ``SephStandardROIHeads.from_config`` built.

DropBlock and the activations have no parameters or buffers, so state dicts (and
checkpoints) are those of the model without them.
"""
from typing import Dict, Iterable

from torch import nn

from sephnet.backend import Conv2d
from sephnet.layers.activations import replace_relu
from sephnet.layers.dropblock import DropBlock2d

__all__ = ["add_dropblock_after_convs", "add_dropblock_to_stages", "apply_head_tricks"]


def add_dropblock_after_convs(
    module: nn.Module, *, drop_prob: float, block_size: int, ramp_iters: int = 0
) -> int:
    """Append DropBlock to every hidden conv of ``module``; returns how many.

    A hidden conv is a detectron2 ``Conv2d`` with a norm or an activation (output convs,
    e.g. the mask predictor, have neither and are left alone). DropBlock runs after the
    conv's norm and activation.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, Conv2d) and (layer.norm is not None or layer.activation is not None):
            block = DropBlock2d(drop_prob=drop_prob, block_size=block_size, ramp_iters=ramp_iters)
            layer.activation = block if layer.activation is None else nn.Sequential(
                layer.activation, block
            )
            count += 1
    return count


def add_dropblock_to_stages(
    resnet: nn.Module,
    stages: Iterable[str],
    *,
    drop_prob: float,
    block_size: int,
    ramp_iters: int = 0,
) -> None:
    """Append DropBlock to the named stages of a detectron2 ``ResNet`` (``res2``..``res5``).

    The stage's output, which feeds both the next stage and the FPN, is the dropped one.

    Raises:
        ValueError: a stage the ResNet does not have.
    """
    names = list(getattr(resnet, "stage_names", ()))
    for stage in stages:
        if stage not in names:
            raise ValueError(
                f"MODEL.SEPH.DROPBLOCK.BACKBONE_STAGES names {stage!r}; the ResNet has {names}."
            )
        getattr(resnet, stage).add_module(
            "dropblock",
            DropBlock2d(drop_prob=drop_prob, block_size=block_size, ramp_iters=ramp_iters),
        )


def apply_head_tricks(cfg, heads: Dict[str, nn.Module]) -> None:
    """Apply the head activation and head DropBlock to the ROI heads' modules, in place.

    Args:
        cfg: the config (``MODEL.SEPH.HEAD_ACTIVATION``, ``MODEL.SEPH.DROPBLOCK``).
        heads: ``{"box": module, "mask": module}`` (a cascade's box heads in one
            ``nn.ModuleList``); "mask" absent without masks.

    Raises:
        ValueError: a non-ReLU activation is asked for but the heads have no ReLU module
            (their norms carry the non-linearity, e.g. EvoNormS0 or FRN), or head DropBlock
            finds no hidden conv in a head it was asked for.
    """
    activation = cfg.MODEL.SEPH.HEAD_ACTIVATION.NAME
    if activation != "ReLU":
        replaced = sum(replace_relu(m, activation) for m in heads.values())
        if replaced == 0:
            raise ValueError(
                f"MODEL.SEPH.HEAD_ACTIVATION.NAME={activation!r}: the ROI heads have no ReLU to "
                "replace (their norms, e.g. EvoNormS0 or FRN, carry the non-linearity)."
            )
    node = cfg.MODEL.SEPH.DROPBLOCK
    for where in node.HEADS:
        if where not in heads:
            continue  # "mask" without MASK_ON is refused at setup
        added = add_dropblock_after_convs(
            heads[where],
            drop_prob=node.DROP_PROB,
            block_size=node.HEAD_BLOCK_SIZE,
            ramp_iters=node.RAMP_ITERS,
        )
        if added == 0:
            raise ValueError(
                f"MODEL.SEPH.DROPBLOCK.HEADS has {where!r}, but that head has no hidden conv "
                "(DropBlock needs conv layers)."
            )
