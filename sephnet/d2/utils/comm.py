"""Helpers for multi-process (distributed) runs; all of them also work in a single process.

Without an initialised ``torch.distributed`` process group they behave as a world of one:
rank 0, size 1, gathers return ``[data]``, barriers return at once. Object gathers travel
as pickled byte tensors over a gloo group (CPU), so they work with any picklable data.
"""

import functools
import logging
import pickle
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "get_local_size",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "shared_random_seed",
    "reduce_dict",
    "create_local_process_group",
]

_LOCAL_PROCESS_GROUP = None
"""The process group of the ranks on this machine; set by ``launch()`` (via
:func:`create_local_process_group`)."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if _distributed() else 1


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if _distributed() else 0


def get_local_rank() -> int:
    """Rank of this process among the processes of its machine.

    Raises:
        RuntimeError: distributed, but the local group was never created (processes not
            started by ``launch()``).
    """
    if not _distributed():
        return 0
    if _LOCAL_PROCESS_GROUP is None:
        raise RuntimeError(
            "No local process group: start the processes with launch()."
        )
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    """Number of processes on this machine (1 when not distributed)."""
    if not _distributed():
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def is_main_process() -> bool:
    """Whether this is global rank 0."""
    return get_rank() == 0


def create_local_process_group(num_workers_per_machine: int) -> None:
    """Create one process group per machine and remember this machine's as the local group.

    Every rank must call it (group creation is collective). Ranks are assumed to be laid out
    machine by machine: machine ``i`` holds ranks ``[i * n, (i + 1) * n)``.

    Raises:
        RuntimeError: the local group already exists.
        ValueError: the world size is not a multiple of ``num_workers_per_machine``.
    """
    global _LOCAL_PROCESS_GROUP
    if _LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("The local process group was already created.")
    world_size = get_world_size()
    if num_workers_per_machine <= 0 or world_size % num_workers_per_machine != 0:
        raise ValueError(
            f"World size {world_size} is not a multiple of num_workers_per_machine="
            f"{num_workers_per_machine}."
        )
    my_machine = get_rank() // num_workers_per_machine
    for machine in range(world_size // num_workers_per_machine):
        ranks = list(
            range(machine * num_workers_per_machine, (machine + 1) * num_workers_per_machine)
        )
        group = dist.new_group(ranks)
        if machine == my_machine:
            _LOCAL_PROCESS_GROUP = group


def synchronize() -> None:
    """Barrier across all processes; a no-op when not distributed or with one process."""
    if not _distributed() or dist.get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL:
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache()
def _get_global_gloo_group():
    """A gloo group over all ranks (the world group itself unless the world uses NCCL)."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def _to_byte_tensor(data: Any, group) -> torch.Tensor:
    backend = dist.get_backend(group)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"comm gathers support the gloo and nccl backends, not {backend!r}.")
    device = torch.device("cpu" if backend == "gloo" else "cuda")
    payload = pickle.dumps(data)
    if len(payload) > 1024**3:
        logging.getLogger(__name__).warning(
            "Rank %d trying to all-gather %.2f GB of data on device %s",
            get_rank(),
            len(payload) / 1024**3,
            device,
        )
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device=device)


def _gather_sizes_and_pad(tensor: torch.Tensor, group) -> "tuple[List[int], torch.Tensor]":
    """All-gather every rank's byte count and pad ``tensor`` with zeros to the largest."""
    world = dist.get_world_size(group=group)
    local = torch.tensor([tensor.numel()], dtype=torch.int64, device=tensor.device)
    sizes = [torch.zeros([1], dtype=torch.int64, device=tensor.device) for _ in range(world)]
    dist.all_gather(sizes, local, group=group)
    size_list = [int(s.item()) for s in sizes]
    longest = max(size_list)
    if tensor.numel() < longest:
        pad = torch.zeros((longest - tensor.numel(),), dtype=torch.uint8, device=tensor.device)
        tensor = torch.cat((tensor, pad), dim=0)
    return size_list, tensor


def _unpickle_all(size_list: List[int], tensors: List[torch.Tensor]) -> List[Any]:
    return [pickle.loads(t.cpu().numpy().tobytes()[:n]) for n, t in zip(size_list, tensors)]


def all_gather(data: Any, group=None) -> List[Any]:
    """Gather a picklable object from every rank, on every rank.

    Args:
        data: any picklable object.
        group: process group; default: a gloo group over all ranks.

    Returns:
        ``[data of rank 0, data of rank 1, ...]``.
    """
    if get_world_size() == 1:
        return [data]
    if group is None:
        group = _get_global_gloo_group()
    if dist.get_world_size(group) == 1:
        return [data]
    size_list, tensor = _gather_sizes_and_pad(_to_byte_tensor(data, group), group)
    buffers = [torch.empty_like(tensor) for _ in size_list]
    dist.all_gather(buffers, tensor, group=group)
    return _unpickle_all(size_list, buffers)


def gather(data: Any, dst: int = 0, group=None) -> List[Any]:
    """Gather a picklable object from every rank onto rank ``dst``.

    Returns:
        On ``dst``: the list of every rank's data, by rank. Elsewhere: ``[]``.
    """
    if get_world_size() == 1:
        return [data]
    if group is None:
        group = _get_global_gloo_group()
    if dist.get_world_size(group=group) == 1:
        return [data]
    size_list, tensor = _gather_sizes_and_pad(_to_byte_tensor(data, group), group)
    if dist.get_rank(group=group) != dst:
        dist.gather(tensor, [], dst=dst, group=group)
        return []
    buffers = [torch.empty_like(tensor) for _ in size_list]
    dist.gather(tensor, buffers, dst=dst, group=group)
    return _unpickle_all(size_list, buffers)


def shared_random_seed() -> int:
    """A random integer in [0, 2**31) that is the same on every rank (rank 0's draw).

    Draws from numpy's global RNG. Every rank must call it, or the job deadlocks.
    """
    return all_gather(np.random.randint(2**31))[0]


def reduce_dict(
    input_dict: Dict[str, torch.Tensor], average: bool = True
) -> Dict[str, torch.Tensor]:
    """Sum (or average) scalar tensors across ranks onto rank 0.

    Args:
        input_dict: name -> 0-dim tensor, the same names on every rank.
        average: divide the sum by the world size.

    Returns:
        The same keys; on rank 0 the reduced values (other ranks' values are unspecified).
        With one process, ``input_dict`` itself.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))
