"""``retry_if_cuda_oom``: rerun a function after a CUDA out-of-memory error."""

import logging
from functools import wraps
from typing import Any, Callable

import torch

__all__ = ["retry_if_cuda_oom"]


def _is_cuda_oom(error: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)


def _to_cpu_if_cuda(x: Any) -> Any:
    device = getattr(x, "device", None)
    if getattr(device, "type", None) == "cuda" and hasattr(x, "to"):
        return x.to(device="cpu")
    return x


def retry_if_cuda_oom(func: Callable) -> Callable:
    """Wrap a stateless tensor function so that a CUDA OOM does not end the run.

    On OOM the wrapper empties the CUDA cache and calls ``func`` again; if that also runs
    out of memory, it moves every top-level argument that is a CUDA tensor (anything with
    ``.device`` and ``.to``) to the CPU and calls ``func`` a last time, so ``func`` must have
    a CPU path. Results may then be CPU tensors. Nested containers are not converted.

    Example: ``ious = retry_if_cuda_oom(pairwise_iou)(boxes1, boxes2)``.
    """

    @wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(2):
            try:
                return func(*args, **kwargs)
            except RuntimeError as e:
                if not _is_cuda_oom(e):
                    raise
            if attempt == 0:
                torch.cuda.empty_cache()
        logging.getLogger(__name__).info(
            "CUDA out of memory in {}; retrying with inputs on the CPU".format(str(func))
        )
        cpu_args = [_to_cpu_if_cuda(x) for x in args]
        cpu_kwargs = {k: _to_cpu_if_cuda(v) for k, v in kwargs.items()}
        return func(*cpu_args, **cpu_kwargs)

    return wrapped
