"""Axis-aligned boxes (:class:`Boxes`), box formats (:class:`BoxMode`) and pairwise box metrics.

Coordinates are absolute pixels. A ``Boxes`` holds a float32 tensor of shape (N, 4) whose rows
are ``(x0, y0, x1, y1)``. Pairwise functions take ``Boxes`` of N and M boxes and return float32
(N, M) matrices.
"""
import math
from enum import IntEnum, unique
from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch

from sephnet.d2.structures.errors import StructureError

_RawBoxType = Union[List[float], Tuple[float, ...], torch.Tensor, np.ndarray]


@unique
class BoxMode(IntEnum):
    """How the numbers of a box are to be read.

    - ``XYXY_ABS``: (x0, y0, x1, y1), absolute pixel coordinates.
    - ``XYWH_ABS``: (x0, y0, width, height), absolute (the COCO json format).
    - ``XYXY_REL``, ``XYWH_REL``: the same relative to the image size; declared for
      compatibility but not convertible (``convert`` raises).
    - ``XYWHA_ABS``: (x_center, y_center, width, height, angle), angle in degrees
      counter-clockwise (rotated boxes).
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3
    XYWHA_ABS = 4

    @staticmethod
    def convert(box: _RawBoxType, from_mode: "BoxMode", to_mode: "BoxMode") -> _RawBoxType:
        """Convert boxes between modes, returning the same container type as the input.

        Args:
            box: one box as a list/tuple of 4 or 5 numbers, or an (N, 4)/(N, 5) ndarray or
                tensor. The input is never modified.
            from_mode: the mode ``box`` is in.
            to_mode: the mode wanted.

        Returns:
            The converted box(es): a list/tuple, ndarray or tensor like the input (the input
            object itself when ``from_mode == to_mode``). Tensors and arrays keep their dtype.

        Raises:
            StructureError: (a ``ValueError`` and ``AssertionError``) for a relative mode, a
                single box that does not have 4 or 5 numbers, or an XYWHA input without 5 columns.
            NotImplementedError: for a pair of modes without a conversion.
        """
        if from_mode == to_mode:
            return box
        relative = (BoxMode.XYXY_REL, BoxMode.XYWH_REL)
        if from_mode in relative or to_mode in relative:
            raise StructureError(
                f"Relative mode not yet supported! BoxMode.convert got {BoxMode(from_mode).name} -> "
                f"{BoxMode(to_mode).name}; only absolute modes can be converted."
            )

        container = type(box)
        if isinstance(box, (list, tuple)):
            if len(box) not in (4, 5):
                raise StructureError(
                    "BoxMode.convert takes either a k-tuple/list or an Nxk array/tensor, where "
                    f"k == 4 or 5; got a {container.__name__} of length {len(box)}"
                )
            arr = torch.tensor(box)[None, :]
        elif isinstance(box, np.ndarray):
            arr = torch.from_numpy(np.asarray(box)).clone()
        else:
            arr = box.clone()

        pair = (BoxMode(from_mode), BoxMode(to_mode))
        if pair == (BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS):
            arr = _xywha_to_xyxy(arr)
        elif pair == (BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS):
            dtype = arr.dtype
            arr = arr.double()
            centers = arr[:, :2] + arr[:, 2:4] / 2.0
            angles = torch.zeros((arr.shape[0], 1), dtype=arr.dtype, device=arr.device)
            arr = torch.cat((centers, arr[:, 2:4], angles), dim=1).to(dtype=dtype)
        elif pair == (BoxMode.XYWH_ABS, BoxMode.XYXY_ABS):
            arr[:, 2:4] += arr[:, 0:2]
        elif pair == (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
            arr[:, 2:4] -= arr[:, 0:2]
        else:
            raise NotImplementedError(
                f"Conversion from BoxMode {pair[0]} to {pair[1]} is not supported yet"
            )

        if isinstance(box, (list, tuple)):
            return container(arr.flatten().tolist())
        if isinstance(box, np.ndarray):
            return arr.numpy()
        return arr


def _xywha_to_xyxy(arr: torch.Tensor) -> torch.Tensor:
    """The axis-aligned rectangle enclosing each rotated box of ``arr`` (N, 5), as (N, 4) XYXY.

    Computed in float64 and cast back to the input dtype.
    """
    if arr.shape[-1] != 5:
        raise StructureError(
            f"The last dimension of input shape must be 5 for XYWHA format, got shape {tuple(arr.shape)}"
        )
    dtype = arr.dtype
    arr = arr.double()
    theta = arr[:, 4] * math.pi / 180.0
    cos, sin = torch.abs(torch.cos(theta)), torch.abs(torch.sin(theta))
    w, h = arr[:, 2], arr[:, 3]
    enclosing_w = cos * w + sin * h
    enclosing_h = cos * h + sin * w
    x0 = arr[:, 0] - enclosing_w / 2.0
    y0 = arr[:, 1] - enclosing_h / 2.0
    out = torch.stack((x0, y0, x0 + enclosing_w, y0 + enclosing_h), dim=1)
    return out.to(dtype=dtype)


class Boxes:
    """A list of N axis-aligned boxes stored as one float32 tensor.

    Behaves like a tensor where it makes sense: indexing, ``len``, iteration, ``to(device)``,
    ``.device``.

    Attributes:
        tensor (Tensor): float32 of shape (N, 4), rows ``(x0, y0, x1, y1)``.
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray, Sequence]):
        """
        Args:
            tensor: anything ``torch.as_tensor`` accepts that forms an (N, 4) matrix. Empty
                input of any shape gives a (0, 4) tensor. Non-tensor input goes to the CPU.

        Raises:
            StructureError: if the data is not an (N, 4) matrix.
        """
        device = tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
        tensor = torch.as_tensor(tensor, dtype=torch.float32, device=device)
        if tensor.numel() == 0:
            # reshape keeps the result connected to the input (matters for tracing)
            tensor = tensor.reshape((-1, 4)).to(dtype=torch.float32, device=device)
        if tensor.dim() != 2 or tensor.size(-1) != 4:
            raise StructureError(f"Boxes expects an (N, 4) tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> "Boxes":
        """A deep copy (the tensor is cloned)."""
        return Boxes(self.tensor.clone())

    def to(self, device: Union[str, torch.device]) -> "Boxes":
        """Boxes on ``device`` (the dtype stays float32)."""
        return Boxes(self.tensor.to(device=device))

    def area(self) -> torch.Tensor:
        """Tensor (N,) of ``(x1 - x0) * (y1 - y0)``; negative for inverted boxes."""
        t = self.tensor
        return (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])

    def clip(self, box_size: Tuple[int, int]) -> None:
        """Clamp x to [0, width] and y to [0, height], in place.

        Args:
            box_size: (height, width).

        Raises:
            StructureError: if any coordinate is inf or NaN.
        """
        if not torch.isfinite(self.tensor).all():
            raise StructureError("Boxes hold NaN or infinite coordinates.")
        h, w = box_size
        x0 = self.tensor[:, 0].clamp(min=0, max=w)
        y0 = self.tensor[:, 1].clamp(min=0, max=h)
        x1 = self.tensor[:, 2].clamp(min=0, max=w)
        y1 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x0, y0, x1, y1), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Bool tensor (N,): True where both width and height are strictly above ``threshold``."""
        t = self.tensor
        return ((t[:, 2] - t[:, 0]) > threshold) & ((t[:, 3] - t[:, 1]) > threshold)

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Boxes":
        """Index the boxes; the result is always a ``Boxes`` (an int gives one box).

        Args:
            item: an int, a slice, a bool mask of length N or an int64 index vector. The result
                may share storage with this object, as tensor indexing does.

        Raises:
            StructureError: if the index does not yield an (K, 4) matrix.
        """
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        selected = self.tensor[item]
        if selected.dim() != 2:
            raise StructureError(f"Indexing on Boxes with {item} failed to return a matrix!")
        return Boxes(selected)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Which boxes lie inside an image, allowing ``boundary_threshold`` pixels of overhang.

        Args:
            box_size: (height, width) of the reference region.
            boundary_threshold: how far a box may extend beyond the region and still count.

        Returns:
            Bool tensor (N,): ``x0, y0 >= -t`` and ``x1 < width + t``, ``y1 < height + t``.
        """
        height, width = box_size
        t = self.tensor
        return (
            (t[..., 0] >= -boundary_threshold)
            & (t[..., 1] >= -boundary_threshold)
            & (t[..., 2] < width + boundary_threshold)
            & (t[..., 3] < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Tensor (N, 2) of box centres ``(x, y)``."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Multiply x coordinates by ``scale_x`` and y coordinates by ``scale_y``, in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    def cat(cls, boxes_list: Sequence["Boxes"]) -> "Boxes":
        """Concatenate a list/tuple of ``Boxes`` into new storage (an empty list gives 0 boxes).

        Raises:
            StructureError: if ``boxes_list`` is not a list/tuple of ``Boxes``.
        """
        if not isinstance(boxes_list, (list, tuple)):
            raise StructureError(f"Boxes.cat expects a list or tuple, got {type(boxes_list).__name__}")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        for b in boxes_list:
            if not isinstance(b, Boxes):
                raise StructureError(f"Boxes.cat expects Boxes, got an element of type {type(b).__name__}")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @torch.jit.unused
    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each box as a tensor of shape (4,)."""
        yield from self.tensor


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection areas of every pair of boxes.

    Args:
        boxes1: N boxes (XYXY).
        boxes2: M boxes (XYXY).

    Returns:
        Tensor (N, M): overlap areas, 0 for disjoint boxes.
    """
    a, b = boxes1.tensor, boxes2.tensor
    top_left = torch.max(a[:, None, :2], b[:, :2])
    bottom_right = torch.min(a[:, None, 2:], b[:, 2:])
    sides = (bottom_right - top_left).clamp_(min=0)
    return sides.prod(dim=2)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over union of every pair of boxes.

    Args:
        boxes1: N boxes (XYXY).
        boxes2: M boxes (XYXY).

    Returns:
        Tensor (N, M): IoU; pairs that do not overlap (including any pair with an empty box)
        are exactly 0, never NaN.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    union = boxes1.area()[:, None] + boxes2.area() - inter
    zero = torch.zeros(1, dtype=inter.dtype, device=inter.device)
    return torch.where(inter > 0, inter / union, zero)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over the area of the second box, for every pair.

    Args:
        boxes1: N boxes (XYXY).
        boxes2: M boxes (XYXY), whose areas are the denominators.

    Returns:
        Tensor (N, M): IoA; 0 where the boxes do not overlap.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    zero = torch.zeros(1, dtype=inter.dtype, device=inter.device)
    return torch.where(inter > 0, inter / boxes2.area(), zero)


def pairwise_point_box_distance(points: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Signed distances from each point to the four edges of each box.

    Args:
        points: (N, 2) of ``(x, y)``.
        boxes: M boxes.

    Returns:
        Tensor (N, M, 4): ``(x - x0, y - y0, x1 - x, y1 - y)``; all positive iff the point is
        strictly inside the box.
    """
    x = points[:, 0:1]
    y = points[:, 1:2]
    x0, y0, x1, y1 = boxes.tensor[None].unbind(dim=2)
    return torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of box i of ``boxes1`` with box i of ``boxes2`` (the diagonal of ``pairwise_iou``).

    Args:
        boxes1: N boxes.
        boxes2: N boxes.

    Returns:
        Tensor (N,): IoU; unlike ``pairwise_iou``, two empty boxes give NaN (0 / 0), as in
        detectron2.

    Raises:
        StructureError: if the lengths differ.
    """
    if len(boxes1) != len(boxes2):
        raise StructureError(
            f"boxlists should have the same number of entries, got {len(boxes1)}, {len(boxes2)}"
        )
    a, b = boxes1.tensor, boxes2.tensor
    sides = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = sides[:, 0] * sides[:, 1]
    return inter / (boxes1.area() + boxes2.area() - inter)
