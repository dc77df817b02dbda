"""``ImageList``: a batch of differently sized images padded into one tensor."""
from typing import Any, List, Tuple, Union

import torch
from torch.nn import functional as F

from sephnet.d2.structures.errors import StructureError


class ImageList:
    """Images of different sizes padded (bottom and right) into a single tensor.

    Attributes:
        tensor (Tensor): (N, H, W) or (N, C_1, ..., C_K, H, W), the padded batch.
        image_sizes (list[tuple[int, int]]): the unpadded (h, w) of each image; h <= H, w <= W.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: List[Tuple[int, int]]):
        """
        Args:
            tensor: the padded batch, shape (N, ..., H, W).
            image_sizes: (h, w) of each of the N images before padding.
        """
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Image ``idx`` without its padding: shape (..., h, w), a view of ``tensor``."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    @torch.jit.unused
    def to(self, *args: Any, **kwargs: Any) -> "ImageList":
        """An ``ImageList`` whose tensor is ``tensor.to(*args, **kwargs)``; sizes are shared."""
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: Union[List[torch.Tensor], Tuple[torch.Tensor, ...]],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
    ) -> "ImageList":
        """Pad images to a common size and stack them.

        The common size is the per-dimension maximum of the images' (h, w); when
        ``size_divisibility > 1`` it is rounded up to a multiple of it (FPN models use 32).
        Each image sits at the top-left corner; the rest is ``pad_value``.

        Args:
            tensors: a non-empty list/tuple of tensors of shape (h_i, w_i) or
                (C_1, ..., C_K, h_i, w_i); all leading dimensions must agree.
            size_divisibility: make the padded H and W multiples of this (0 or 1: no rounding).
            pad_value: the fill value of the padding.

        Returns:
            ImageList whose tensor has shape (N, C_1, ..., C_K, H, W), the dtype and device of
            ``tensors[0]``, contiguous.

        Raises:
            StructureError: for an empty or non-sequence input, a non-tensor element, or
                mismatched leading dimensions.
        """
        if not isinstance(tensors, (tuple, list)):
            raise StructureError(
                f"ImageList.from_tensors expects a list or tuple of tensors, got {type(tensors).__name__}"
            )
        if len(tensors) == 0:
            raise StructureError("ImageList.from_tensors got an empty list of tensors")
        lead = tensors[0].shape[:-2] if isinstance(tensors[0], torch.Tensor) else None
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise StructureError(f"ImageList.from_tensors: element {i} is a {type(t).__name__}, not a Tensor")
            if t.shape[:-2] != lead:
                raise StructureError(
                    f"ImageList.from_tensors: element {i} has shape {tuple(t.shape)}, whose leading "
                    f"dimensions differ from the first element's {tuple(lead)}"
                )

        if torch.jit.is_tracing():
            return ImageList._from_tensors_traced(tensors, size_divisibility, pad_value)
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        if size_divisibility > 1:
            stride = size_divisibility
            max_h = (max_h + stride - 1) // stride * stride
            max_w = (max_w + stride - 1) // stride * stride

        batched = tensors[0].new_full([len(tensors), *lead, max_h, max_w], pad_value)
        for img, slot in zip(tensors, batched):
            slot[..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batched.contiguous(), image_sizes)

    @staticmethod
    def _from_tensors_traced(
        tensors: Union[List[torch.Tensor], Tuple[torch.Tensor, ...]],
        size_divisibility: int,
        pad_value: float,
    ) -> "ImageList":
        """:meth:`from_tensors` while tracing: the same result, computed from the traced
        sizes (0-d tensors) so that a traced model pads and clips for whatever size it is
        given, and with ``F.pad`` rather than copies into views (which exporters drop).
        ``image_sizes`` then holds (h, w) pairs of 0-d tensors, as in detectron2."""
        sizes = [torch.stack([torch.as_tensor(t.shape[-2]), torch.as_tensor(t.shape[-1])])
                 for t in tensors]
        max_size = torch.stack(sizes).max(0).values
        if size_divisibility > 1:
            stride = size_divisibility
            max_size = (max_size + (stride - 1)).div(stride, rounding_mode="floor") * stride
        padded = [
            F.pad(t, [0, max_size[1] - t.shape[-1], 0, max_size[0] - t.shape[-2]], value=pad_value)
            for t in tensors
        ]
        image_sizes = [(size[0], size[1]) for size in sizes]
        return ImageList(torch.stack(padded).contiguous(), image_sizes)
