"""ROIAlign with its boxes split over threads, for inference on CPUs.

torchvision's CPU ``roi_align`` kernel (the one detectron2 and the core use when torchvision
loads) walks the boxes in one thread whatever ``torch.get_num_threads()`` says, so on a
multi-core CPU the box and mask poolers leave all cores but one idle. Every box's output depends
only on that box and the feature map, so cutting the boxes into one chunk per thread and
concatenating the chunks' outputs gives exactly the same tensor, bit for bit.
"""
import concurrent.futures
import functools

import torch
from torch import nn

__all__ = ["ThreadedROIAlign", "MIN_BOXES_PER_THREAD"]

MIN_BOXES_PER_THREAD = 16
"""Fewer boxes than this per thread are pooled in the calling thread (a thread hand-off costs
more than pooling a handful of boxes)."""


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """One shared thread pool per size, created on first use (kept out of the module so that
    models holding a ``ThreadedROIAlign`` still deep-copy and pickle)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                 thread_name_prefix="roi_align")


class ThreadedROIAlign(nn.Module):
    """Wraps one ROIAlign module (the backend's ``ROIAlign``: ``forward(input, rois)`` with
    ``input`` a ``Tensor[N, C, H, W]`` and ``rois`` a ``Tensor[M, 5]`` of (batch index, x0, y0,
    x1, y1), returning ``Tensor[M, C, PH, PW]``) and runs it on ``torch.get_num_threads()``
    chunks of the boxes at once for a CPU feature map without gradients; with gradients on, on
    a GPU, with one thread or with too few boxes it calls the wrapped module directly.

    The feature map should already be contiguous: the kernel makes a contiguous copy of a
    non-contiguous one in every call, i.e. once per chunk here.
    """

    def __init__(self, roi_align: nn.Module):
        super().__init__()
        self.roi_align = roi_align

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        threads = min(torch.get_num_threads(), len(rois) // MIN_BOXES_PER_THREAD)
        if threads < 2 or torch.is_grad_enabled() or input.device.type != "cpu":
            return self.roi_align(input, rois)
        autocast = torch.is_autocast_enabled(input.device.type)
        dtype = torch.get_autocast_dtype(input.device.type)

        def pool(chunk: torch.Tensor) -> torch.Tensor:
            # grad mode and autocast are per thread: the worker runs the kernel as the caller
            # would have (no grad; the same autocast state, which casts to float32 for ROIAlign)
            with torch.no_grad(), torch.autocast(input.device.type, dtype=dtype,
                                                 enabled=autocast):
                return self.roi_align(input, chunk)

        chunks = torch.tensor_split(rois, threads)
        return torch.cat(list(_pool(threads).map(pool, chunks)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.roi_align!r})"
