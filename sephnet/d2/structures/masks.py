"""Instance segmentation masks: full-image bitmaps (:class:`BitMasks`), polygons
(:class:`PolygonMasks`) and per-ROI masks (:class:`ROIMasks`), plus polygon rasterisation.

Polygons follow the COCO convention: one flat float64 array ``[x0, y0, x1, y1, ...]`` per
polygon (at least 3 points), a list of such arrays per instance, a list of instances per image.
"""
import copy
import itertools
from typing import Any, Iterator, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from sephnet.d2.layers.mask_ops import paste_masks_in_image
from sephnet.d2.layers.roi_align import ROIAlign
from sephnet.d2.structures.boxes import Boxes
from sephnet.d2.structures.errors import StructureError
from sephnet.d2.utils.memory import retry_if_cuda_oom


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area enclosed by the polygon with vertices ``(x[i], y[i])`` (shoelace formula).

    Args:
        x, y: 1-D arrays of the same length.

    Returns:
        The absolute area (float64).
    """
    return 0.5 * np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def polygons_to_bitmask(polygons: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise the union of ``polygons`` with the COCO API.

    Args:
        polygons: flat coordinate arrays (x0, y0, x1, y1, ...) of one instance.
        height, width: the output size.

    Returns:
        ndarray of bool, shape (height, width); all False for an empty list.
    """
    if len(polygons) == 0:
        # the COCO API rejects an empty polygon list
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects(polygons, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def rasterize_polygons_within_box(
    polygons: List[np.ndarray], box: np.ndarray, mask_size: int
) -> torch.Tensor:
    """Rasterise an instance's polygons inside ``box`` onto a (mask_size, mask_size) grid.

    This is how Mask R-CNN targets are made from polygons: the polygons are translated so that
    the box's top-left corner is the origin, scaled so that the box spans the grid (box sides
    shorter than 0.1 count as 0.1), then rasterised by the COCO API. The inputs are not modified.

    Args:
        polygons: the instance's flat float64 coordinate arrays.
        box: (4,) array ``(x0, y0, x1, y1)``.
        mask_size: the side of the output grid.

    Returns:
        Bool tensor (mask_size, mask_size).
    """
    x0, y0 = box[0], box[1]
    scale_x = mask_size / max(box[2] - x0, 0.1)
    scale_y = mask_size / max(box[3] - y0, 0.1)

    moved = copy.deepcopy(polygons)
    for p in moved:
        p[0::2] = p[0::2] - x0
        p[1::2] = p[1::2] - y0
        # one multiplication when the scales agree, to round exactly as detectron2 does
        if scale_x == scale_y:
            p *= scale_y
        else:
            p[0::2] *= scale_x
            p[1::2] *= scale_y
    return torch.from_numpy(polygons_to_bitmask(moved, mask_size, mask_size))


class BitMasks:
    """Per-instance binary masks over the whole image.

    Attributes:
        tensor (Tensor): bool, shape (N, H, W).
        image_size (torch.Size): (H, W).
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray]):
        """
        Args:
            tensor: (N, H, W) masks of any dtype, converted to bool; arrays go to the CPU.

        Raises:
            StructureError: if the input is not 3-dimensional.
        """
        device = tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
        tensor = torch.as_tensor(tensor, dtype=torch.bool, device=device)
        if tensor.dim() != 3:
            raise StructureError(f"BitMasks expects an (N, H, W) tensor, got shape {tuple(tensor.shape)}")
        self.image_size = tensor.shape[1:]
        self.tensor = tensor

    @torch.jit.unused
    def to(self, *args: Any, **kwargs: Any) -> "BitMasks":
        """``BitMasks`` of ``tensor.to(*args, **kwargs)`` (converted back to bool)."""
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @torch.jit.unused
    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "BitMasks":
        """Index the masks: an int gives one mask, a slice / bool mask / index tensor a subset.

        Raises:
            StructureError: if the index does not yield an (K, H, W) tensor.
        """
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise StructureError(
                f"Indexing on BitMasks with {item} returns a tensor with shape {tuple(selected.shape)}!"
            )
        return BitMasks(selected)

    @torch.jit.unused
    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each mask, a bool (H, W) tensor."""
        yield from self.tensor

    @torch.jit.unused
    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.tensor)})"

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def nonempty(self) -> torch.Tensor:
        """Bool tensor (N,): True where the mask has at least one pixel set."""
        return self.tensor.flatten(1).any(dim=1)

    @staticmethod
    def from_polygon_masks(
        polygon_masks: Union["PolygonMasks", List[List[np.ndarray]]], height: int, width: int
    ) -> "BitMasks":
        """Rasterise polygons into full-image masks of size (height, width).

        Args:
            polygon_masks: a ``PolygonMasks`` or its ``polygons`` list.
            height, width: the image size.
        """
        if isinstance(polygon_masks, PolygonMasks):
            polygon_masks = polygon_masks.polygons
        bitmaps = [torch.from_numpy(polygons_to_bitmask(p, height, width)) for p in polygon_masks]
        if not bitmaps:
            return BitMasks(torch.empty(0, height, width, dtype=torch.bool))
        return BitMasks(torch.stack(bitmaps))

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Crop mask i to ``boxes[i]`` and resample it to (mask_size, mask_size).

        Uses ``ROIAlign((mask_size, mask_size), 1.0, 0, aligned=True)`` on the float masks and
        thresholds at 0.5, as detectron2 does to build Mask R-CNN targets.

        Args:
            boxes: float (N, 4) XYXY boxes in image pixels, one per mask.
            mask_size: output side M.

        Returns:
            Bool tensor (N, M, M) on the masks' device.

        Raises:
            StructureError: if the number of boxes differs from the number of masks.
        """
        if len(boxes) != len(self):
            raise StructureError(
                f"crop_and_resize: got {len(boxes)} boxes for {len(self)} masks; they must be equal"
            )
        device = self.tensor.device
        batch_index = torch.arange(len(boxes), device=device).to(dtype=boxes.dtype)[:, None]
        rois = torch.cat([batch_index, boxes.to(device=device)], dim=1)
        pooled = ROIAlign((mask_size, mask_size), 1.0, 0, aligned=True).forward(
            self.tensor.to(dtype=torch.float32)[:, None], rois
        )
        return pooled.squeeze(1) >= 0.5

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes around each mask: (x_min, y_min, x_max + 1, y_max + 1) in pixels.

        Returns:
            ``Boxes`` of N float32 boxes on the CPU; all zeros for an empty mask.
        """
        boxes = torch.zeros(self.tensor.shape[0], 4, dtype=torch.float32)
        cols_used = self.tensor.any(dim=1)
        rows_used = self.tensor.any(dim=2)
        for i in range(self.tensor.shape[0]):
            xs = torch.where(cols_used[i])[0]
            ys = torch.where(rows_used[i])[0]
            if len(xs) and len(ys):
                boxes[i] = torch.tensor(
                    [float(xs[0]), float(ys[0]), float(xs[-1]) + 1, float(ys[-1]) + 1]
                )
        return Boxes(boxes)

    @staticmethod
    def cat(bitmasks_list: Sequence["BitMasks"]) -> "BitMasks":
        """Concatenate a non-empty list/tuple of ``BitMasks`` of the same image size.

        Raises:
            StructureError: for an empty list or an element that is not ``BitMasks``.
        """
        _check_cat_input(bitmasks_list, BitMasks)
        return type(bitmasks_list[0])(torch.cat([m.tensor for m in bitmasks_list], dim=0))


def _check_cat_input(items: Any, cls: type) -> None:
    """Raise ``StructureError`` unless ``items`` is a non-empty list/tuple of ``cls``."""
    if not isinstance(items, (list, tuple)):
        raise StructureError(f"{cls.__name__}.cat expects a list or tuple, got {type(items).__name__}")
    if len(items) == 0:
        raise StructureError(f"{cls.__name__}.cat got an empty list")
    for item in items:
        if not isinstance(item, cls):
            raise StructureError(f"{cls.__name__}.cat got an element of type {type(item).__name__}")


def _as_polygon(coords: Union[torch.Tensor, np.ndarray, Sequence[float]]) -> np.ndarray:
    """A flat float64 CPU array of a polygon's coordinates, validated.

    Raises:
        ValueError: for an odd number of coordinates or fewer than 3 points.
    """
    if isinstance(coords, torch.Tensor):
        coords = coords.cpu().numpy()
    # float64 keeps crop/rescale exact enough; polygons always live on the CPU
    arr = np.asarray(coords).astype("float64")
    if len(arr) % 2 != 0 or len(arr) < 6:
        raise ValueError(
            f"Cannot create a polygon from {len(arr)} coordinates: expected an even number, "
            "at least 6 (3 points)."
        )
    return arr


class PolygonMasks:
    """Per-instance masks given as polygons.

    Attributes:
        polygons (list[list[ndarray]]): for each instance, its polygons as flat float64 arrays
            ``[x0, y0, ..., xn, yn]`` with n >= 2.
    """

    def __init__(self, polygons: List[List[Union[torch.Tensor, np.ndarray]]]):
        """
        Args:
            polygons: a list (instances) of lists (polygons) of coordinate sequences (tensor,
                array or list of numbers). Copied to float64 numpy arrays.

        Raises:
            ValueError: if either level is not a list, or a polygon has an odd number of
                coordinates or fewer than 6.
        """
        if not isinstance(polygons, list):
            raise ValueError(
                "PolygonMasks takes, per instance, a list of polygons (flat coordinate arrays). "
                f"Got '{type(polygons)}' instead."
            )
        self.polygons: List[List[np.ndarray]] = []
        for per_instance in polygons:
            if not isinstance(per_instance, list):
                raise ValueError(
                    "Each instance of PolygonMasks must be a list of polygons. "
                    f"Got '{type(per_instance)}' instead."
                )
            self.polygons.append([_as_polygon(p) for p in per_instance])

    def to(self, *args: Any, **kwargs: Any) -> "PolygonMasks":
        """Polygons always stay on the CPU: returns ``self``."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_bounding_boxes(self) -> Boxes:
        """Boxes around each instance's polygon vertices.

        As in detectron2, the upper corner starts at (0, 0) and the lower at (+inf, +inf), so an
        instance without polygons gets ``(inf, inf, 0, 0)`` and the max is never below 0.

        Returns:
            ``Boxes`` of N float32 boxes.
        """
        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for i, per_instance in enumerate(self.polygons):
            low = torch.full((2,), float("inf"), dtype=torch.float32)
            high = torch.zeros(2, dtype=torch.float32)
            for polygon in per_instance:
                points = torch.from_numpy(polygon).view(-1, 2).to(dtype=torch.float32)
                low = torch.min(low, points.min(dim=0).values)
                high = torch.max(high, points.max(dim=0).values)
            boxes[i, :2] = low
            boxes[i, 2:] = high
        return Boxes(boxes)

    def nonempty(self) -> torch.Tensor:
        """Bool tensor (N,): True where the instance has at least one polygon."""
        return torch.tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def __getitem__(self, item: Union[int, slice, List[int], torch.Tensor]) -> "PolygonMasks":
        """Select instances.

        Args:
            item: an int (one instance), a slice, a list of ints, a 1-D bool mask of length N,
                or an int32/int64 index tensor.

        Raises:
            ValueError: for a tensor of another dtype, or a bool mask that is not 1-D.
        """
        if isinstance(item, int):
            chosen = [self.polygons[item]]
        elif isinstance(item, slice):
            chosen = self.polygons[item]
        elif isinstance(item, list):
            chosen = [self.polygons[i] for i in item]
        elif isinstance(item, torch.Tensor):
            if item.dtype == torch.bool:
                if item.dim() != 1:
                    raise StructureError(
                        f"PolygonMasks: a bool index must be 1-D, got shape {tuple(item.shape)}"
                    )
                indices = item.nonzero().squeeze(1).cpu().tolist()
            elif item.dtype in (torch.int32, torch.int64):
                indices = item.cpu().tolist()
            else:
                raise ValueError(f"Unsupported tensor dtype={item.dtype} for indexing!")
            chosen = [self.polygons[i] for i in indices]
        else:
            raise TypeError(
                f"PolygonMasks cannot be indexed by {type(item).__name__}; use an int, slice, "
                "list of ints or a bool/int tensor"
            )
        return PolygonMasks(chosen)

    def __iter__(self) -> Iterator[List[np.ndarray]]:
        """Yield each instance's list of float64 polygon arrays."""
        return iter(self.polygons)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.polygons)})"

    def __len__(self) -> int:
        return len(self.polygons)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Rasterise each instance inside its box on an (M, M) grid (see
        :func:`rasterize_polygons_within_box`).

        Args:
            boxes: float (N, 4) XYXY boxes, one per instance, on any device.
            mask_size: output side M.

        Returns:
            Bool tensor (N, M, M) on the device of ``boxes``.

        Raises:
            StructureError: if the number of boxes differs from the number of instances.
        """
        if len(boxes) != len(self):
            raise StructureError(
                f"crop_and_resize: got {len(boxes)} boxes for {len(self)} masks; they must be equal"
            )
        device = boxes.device
        # polygons are many tiny arrays: rasterising them is CPU work
        cpu_boxes = boxes.to(torch.device("cpu"))
        masks = [
            rasterize_polygons_within_box(polys, box.numpy(), mask_size)
            for polys, box in zip(self.polygons, cpu_boxes)
        ]
        if not masks:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        return torch.stack(masks, dim=0).to(device=device)

    def area(self) -> torch.Tensor:
        """Tensor (N,): the summed shoelace area of each instance's polygons (holes are not
        subtracted; overlaps count twice), float64."""
        areas = []
        for per_instance in self.polygons:
            total = 0
            for p in per_instance:
                total += polygon_area(p[0::2], p[1::2])
            areas.append(total)
        return torch.tensor(areas)

    @staticmethod
    def cat(polymasks_list: Sequence["PolygonMasks"]) -> "PolygonMasks":
        """Concatenate a non-empty list/tuple of ``PolygonMasks``.

        Raises:
            StructureError: for an empty list or an element that is not ``PolygonMasks``.
        """
        _check_cat_input(polymasks_list, PolygonMasks)
        merged = list(itertools.chain.from_iterable(pm.polygons for pm in polymasks_list))
        return type(polymasks_list[0])(merged)


class ROIMasks:
    """N small masks, each defined inside its own ROI box; pasting them into the image with the
    boxes gives full-image masks.

    Attributes:
        tensor (Tensor): (N, M, M) mask scores or probabilities.
    """

    def __init__(self, tensor: torch.Tensor):
        """
        Raises:
            ValueError: if ``tensor`` is not 3-dimensional.
        """
        if tensor.dim() != 3:
            raise ValueError(
                f"ROIMasks must take a masks of 3 dimension, got shape {tuple(tensor.shape)}."
            )
        self.tensor = tensor

    def to(self, device: Union[str, torch.device]) -> "ROIMasks":
        return ROIMasks(self.tensor.to(device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: Union[slice, torch.Tensor]) -> "ROIMasks":
        """Select masks with a slice, a bool mask or an index tensor.

        Raises:
            ValueError: if the result is not (K, M, M) (e.g. an int index).
        """
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise ValueError(
                f"Indexing on ROIMasks with {item} returns a tensor with shape {tuple(selected.shape)}!"
            )
        return ROIMasks(selected)

    @torch.jit.unused
    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.tensor)})"

    @torch.jit.unused
    def to_bitmasks(
        self, boxes: torch.Tensor, height: int, width: int, threshold: float = 0.5
    ) -> BitMasks:
        """Paste each mask into an image of (height, width) inside its box.

        Args:
            boxes: float (N, 4) XYXY boxes.
            height, width: image size.
            threshold: probability above which a pasted pixel is set.

        Returns:
            ``BitMasks`` (N, height, width).
        """
        paste = retry_if_cuda_oom(paste_masks_in_image)
        return BitMasks(paste(self.tensor, boxes, (height, width), threshold=threshold))
