"""ROI box coders: detectron2's ``Box2BoxTransform`` and sephv24's corner-offset coder.

A box coder turns (proposal, target box) pairs into regression targets (``get_deltas``)
and predicted deltas back into boxes (``apply_deltas``). sephnet's predictor
(``SephOutputLayers``) and detectron2's loss helpers only use that API plus ``weights``
(whose length is the number of deltas per box), so any class here can stand in for
``Box2BoxTransform``. Both are registered in ``SEPH_BOX_CODER_REGISTRY`` and selected by
``MODEL.SEPH.BOX_CODER.NAME`` (see :func:`build_box_coder`).

The corner-offset coder (docs/components.md#corner-offset-box-coder, "offset encode (sephv24)")::

    target  d = (g_corner - p_corner) / step        per corner coordinate (x1, y1, x2, y2)
    decode  b = p_corner + step * d, then x2 >= x1 and y2 >= y1 forced (x2 := max(x1, x2))

The original measured corners in image-normalised coordinates with ``step = 0.02`` (2% of
the padded image height for y, of its width for x), not relative to the box size. In
detectron2's absolute-pixel convention the step is a length in pixels; sephnet uses one
fixed step per coordinate (``MODEL.SEPH.BOX_CODER.CORNER_OFFSET_STEP``, default 16 px ~
0.02 x the log's 800 px long side). This is the deviation: the original's step grew with
the batch's padded image size, a coder without image sizes cannot do that.
"""
from typing import Sequence, Tuple, Union

import torch

from sephnet.backend import Box2BoxTransform, CfgNode
from sephnet.modeling.registry import SEPH_BOX_CODER_REGISTRY, get_registered

__all__ = ["CornerOffsetBox2BoxTransform", "build_box_coder"]

SEPH_BOX_CODER_REGISTRY.register(Box2BoxTransform)


@SEPH_BOX_CODER_REGISTRY.register()
class CornerOffsetBox2BoxTransform:
    """Encode a box as the offsets of its two corners from the proposal's, in ``step`` units.

    Unlike ``Box2BoxTransform`` the deltas do not scale with the proposal size, and decoding
    has no exponential, so no clamp is needed. Decoded boxes are not clipped to the image
    (detectron2 clips at inference, as the original did only at test time).
    """

    def __init__(self, step: Union[float, Sequence[float]] = 16.0):
        """
        Args:
            step: pixels per unit delta: one number for all four coordinates, or four
                ``(x1, y1, x2, y2)``; each > 0.

        Raises:
            ValueError: a step is not a positive number, or not 1 or 4 of them.
        """
        steps = (step,) * 4 if isinstance(step, (int, float)) else tuple(step)
        if len(steps) != 4 or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in steps
        ):
            raise ValueError(
                f"CornerOffsetBox2BoxTransform: step={step!r}; expected a positive number or "
                "four positive numbers (x1, y1, x2, y2) in pixels."
            )
        self.steps: Tuple[float, float, float, float] = tuple(float(s) for s in steps)

    @property
    def weights(self) -> Tuple[float, float, float, float]:
        """Multipliers from pixel offsets to deltas (1 / step); 4 entries = 4 deltas per box."""
        return tuple(1.0 / s for s in self.steps)

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            src_boxes: float ``[R, 4]`` proposals, XYXY pixels.
            target_boxes: float ``[R, 4]`` boxes to encode, XYXY pixels.

        Returns:
            float ``[R, 4]`` deltas ``(target - src) / step``.
        """
        if not isinstance(src_boxes, torch.Tensor) or not isinstance(target_boxes, torch.Tensor):
            raise TypeError(
                "get_deltas takes two [R, 4] tensors; got "
                f"{type(src_boxes).__name__} and {type(target_boxes).__name__}."
            )
        steps = src_boxes.new_tensor(self.steps)
        return (target_boxes - src_boxes) / steps

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            deltas: float ``[R, 4K]`` (K boxes per proposal, as ``Box2BoxTransform``).
            boxes: float ``[R, 4]`` proposals, XYXY pixels.

        Returns:
            float ``[R, 4K]`` decoded boxes with x2 >= x1 and y2 >= y1.
        """
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        per_box = deltas.view(deltas.shape[0], -1, 4)
        decoded = boxes[:, None, :] + per_box * deltas.new_tensor(self.steps)
        x1, y1, x2, y2 = decoded.unbind(dim=2)
        # the original forced ymax >= ymin, xmax >= xmin after decoding; max keeps a gradient
        # to the larger corner, so a flipped prediction still learns
        fixed = torch.stack([x1, y1, torch.maximum(x1, x2), torch.maximum(y1, y2)], dim=2)
        return fixed.reshape(deltas.shape)


def build_box_coder(cfg: CfgNode, weights: Union[Sequence[float], None] = None):
    """The ROI box coder named by ``MODEL.SEPH.BOX_CODER.NAME``.

    Args:
        cfg: a config prepared with ``add_sephnet_config``.
        weights: ``Box2BoxTransform`` only: its 4 weights; None reads
            ``MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS`` (Cascade passes its per-stage weights).

    Returns:
        ``Box2BoxTransform(weights)``, or ``CornerOffsetBox2BoxTransform`` with
        ``MODEL.SEPH.BOX_CODER.CORNER_OFFSET_STEP``.

    Raises:
        ValueError: the name is not registered (the message lists the coders).
    """
    node = cfg.MODEL.SEPH.BOX_CODER
    coder_cls = get_registered(SEPH_BOX_CODER_REGISTRY, node.NAME, "MODEL.SEPH.BOX_CODER.NAME")
    if coder_cls is CornerOffsetBox2BoxTransform:
        return CornerOffsetBox2BoxTransform(step=node.CORNER_OFFSET_STEP)
    if coder_cls is Box2BoxTransform:
        return Box2BoxTransform(
            weights=tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS if weights is None else weights)
        )
    return coder_cls()
