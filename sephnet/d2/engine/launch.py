"""Start single- or multi-process training (detectron2.engine.launch).

``launch(main_func, num_gpus_per_machine, ...)`` calls ``main_func(*args)`` directly when
the world has one process; otherwise it spawns ``num_gpus_per_machine`` processes on this
machine, each joining one ``torch.distributed`` process group before calling
``main_func(*args)``.

Device choice (a core addition; detectron2 v0.6 requires CUDA here): with CUDA the
backend is NCCL and local rank ``i`` uses GPU ``i``; without CUDA the backend is GLOO and
``num_gpus_per_machine`` counts CPU worker processes.
"""
import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sephnet.d2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    """A TCP port that was free on this machine a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in every process of a (possibly) distributed job.

    Call it on every machine of the job.

    Args:
        main_func: the per-process entry point (must be picklable when spawning).
        num_gpus_per_machine: processes per machine: GPUs with CUDA, CPU workers without.
        num_machines: machines in the job.
        machine_rank: this machine's index in ``[0, num_machines)``.
        dist_url: ``torch.distributed`` init URL, e.g. ``"tcp://127.0.0.1:8686"``, or
            ``"auto"`` (single machine only): a free local port.
        args: positional arguments of ``main_func``.
        timeout: timeout of the distributed collectives.

    Raises:
        ValueError: a non-positive process count, ``machine_rank`` out of range, a missing
            ``dist_url``, ``"auto"`` with several machines, more processes than visible
            GPUs when CUDA is used, or (without CUDA) more worker processes than CPU cores.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"num_gpus_per_machine={num_gpus_per_machine} and num_machines={num_machines} "
            "must both be >= 1."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"machine_rank={machine_rank} must be in [0, {num_machines}).")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return

    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} asks for more processes than the "
            f"{torch.cuda.device_count()} visible CUDA device(s)."
        )
    cores = os.cpu_count() or 1
    if not torch.cuda.is_available():
        if num_gpus_per_machine > cores:
            raise ValueError(
                f"--num-gpus {num_gpus_per_machine}: no CUDA device is visible, so it asks for "
                f"{num_gpus_per_machine} CPU worker processes, but this machine has {cores} CPU "
                "core(s). Use --num-gpus 1, or at most the number of cores."
            )
        logger.warning(
            "No CUDA device is visible: --num-gpus %d starts %d CPU worker processes (gloo).",
            num_gpus_per_machine, num_gpus_per_machine,
        )
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' works on a single machine only; give a tcp:// URL.")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if not dist_url:
        raise ValueError("A multi-process launch needs dist_url (e.g. 'auto' or 'tcp://host:port').")
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs; prefer tcp://")

    mp.spawn(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
    )


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Body of one spawned process: join the process group, pick the device, run."""
    use_cuda = torch.cuda.is_available()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="NCCL" if use_cuda else "GLOO",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error("Could not join the process group at %s", dist_url)
        raise
    comm.create_local_process_group(num_gpus_per_machine)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    # All ranks are up before anyone starts work (avoids timeouts in the first collective).
    comm.synchronize()
    try:
        main_func(*args)
        # No rank tears its connections down while another may still be using them.
        comm.synchronize()
    finally:
        dist.destroy_process_group()
