"""How fast a config trains, infers and loads data, and how much memory it takes.

detectron2's ``tools/benchmark.py`` for sephnet configs::

    python -m sephnet.tools.benchmark --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml --task train
    python -m sephnet.tools.benchmark --config-file X --task eval --num-iter 20
    python -m sephnet.tools.benchmark --config-file X --task data --num-iter 200
    python -m sephnet.tools.benchmark --config-file configs/coco/Mask-RCNN-FPN-sephv14_10.yaml --task train \\
        --opts DATASETS.TRAIN "('shapes_train',)" MODEL.ROI_HEADS.NUM_CLASSES 3 MODEL.WEIGHTS ""

Tasks, each timed over ``--num-iter`` iterations after ``--warmup`` untimed ones:

* ``train``: one optimiser step (data loading excluded) of the model on batches of
  ``SOLVER.IMS_PER_BATCH`` images from ``DATASETS.TRAIN``, with sephnet's optimizer;
* ``eval``: one inference (batch of 1, data loading excluded) on images of ``DATASETS.TEST[0]``;
* ``data``: fetching one batch from the training loader (workers: ``DATALOADER.NUM_WORKERS``).

It prints the machine (CPU, cores, threads, torch, backend, device), the median and
spread of the iteration times, images per second at the median, and the peak memory:
the process's peak resident set size (CPU) and, on CUDA, the peak allocated by torch.
Weights are loaded only when ``MODEL.WEIGHTS`` is set; speed does not depend on them much,
but the number of boxes the heads see does.
"""
import argparse
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch

from sephnet.backend import (
    BACKEND,
    CfgNode,
    DefaultTrainer,
    DetectionCheckpointer,
    EventStorage,
    describe,
    get_event_storage,
    setup_logger,
)
from sephnet.data import build_train_loader
from sephnet.engine.fast_inference import fast_inference_model
from sephnet.solver import build_optimizer
from sephnet.tools.config_loading import load_config

__all__ = ["TASKS", "machine_summary", "time_iterations", "peak_memory", "benchmark", "main"]

TASKS = ("train", "eval", "data")


def machine_summary(device: str, backend_location: bool = True) -> str:
    """One line: CPU model, cores, torch threads, torch version, backend (and the folder it
    was imported from, unless ``backend_location`` is False, e.g. for a file to commit), device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = ""
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    backend = describe() if backend_location else f"sephnet backend: {BACKEND}"
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {backend}, device {device}{gpu}")


def time_iterations(step: Callable[[], int], num_iter: int, warmup: int,
                    device: str = "cpu") -> Dict[str, float]:
    """Run ``step`` (returns the number of images it processed) ``warmup`` times untimed,
    then ``num_iter`` times timed; returns seconds per iteration (median, min, max) and
    images per second at the median."""
    if num_iter < 1 or warmup < 0:
        raise ValueError(f"--num-iter must be >= 1 and --warmup >= 0; got {num_iter}, {warmup}")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        step()
    times, images = [], []
    for _ in range(num_iter):
        sync()
        start = time.perf_counter()
        images.append(step())
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "max_s": max(times),
            "images_per_s": statistics.median(images) / median if median > 0 else float("inf")}


def peak_memory(device: str) -> Dict[str, float]:
    """Peak resident set size of this process (MiB) and, on CUDA, torch's peak allocation."""
    result = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda") and torch.cuda.is_available():
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _model(cfg: CfgNode) -> torch.nn.Module:
    model = DefaultTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model


def _train_step(cfg: CfgNode) -> Callable[[], int]:
    """Needs an active ``EventStorage`` (the models log training statistics into it)."""
    model = _model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    batches = iter(build_train_loader(cfg))
    storage = get_event_storage()

    def step() -> int:
        batch = next(batches)
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        storage.iter += 1
        return len(batch)

    return step


def _eval_step(cfg: CfgNode) -> Callable[[], int]:
    """The model as ``train_net.py`` evaluates it (the fast path with
    ``MODEL.SEPH.FAST_INFERENCE.ENABLED``)."""
    model = fast_inference_model(cfg, _model(cfg).eval())
    inputs = _cycle(DefaultTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0]))

    def step() -> int:
        batch = next(inputs)
        with torch.no_grad():
            model(batch)
        return len(batch)

    return step


def _data_step(cfg: CfgNode) -> Callable[[], int]:
    batches = iter(build_train_loader(cfg))
    return lambda: len(next(batches))


def _cycle(loader) -> Iterator:
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("The test dataset is empty.")


_STEPS = {"train": _train_step, "eval": _eval_step, "data": _data_step}


def benchmark(cfg: CfgNode, task: str, num_iter: int, warmup: int) -> Dict[str, float]:
    """Timings (see :func:`time_iterations`) and peak memory of ``task`` on ``cfg``."""
    if task not in _STEPS:
        raise ValueError(f"--task {task!r}; expected one of {', '.join(TASKS)}")
    with EventStorage(0):
        step = _STEPS[task](cfg)
        result = time_iterations(step, num_iter, warmup, cfg.MODEL.DEVICE)
    result.update(peak_memory(cfg.MODEL.DEVICE))
    return result


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--num-iter", type=int, default=10, help="timed iterations (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations (default 2)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides, KEY VALUE pairs")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="sephnet")
    try:
        cfg = load_config(args.config_file, args.opts)
        result = benchmark(cfg, args.task, args.num_iter, args.warmup)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"benchmark: {e}", file=sys.stderr)
        return 1
    print(f"machine: {machine_summary(cfg.MODEL.DEVICE)}")
    print(f"{args.task}: {result['median_s']:.4f} s/iter (median of {args.num_iter}, "
          f"min {result['min_s']:.4f}, max {result['max_s']:.4f}), "
          f"{result['images_per_s']:.2f} images/s")
    memory = f"peak RSS {result['peak_rss_mib']:.0f} MiB"
    if "cuda_max_allocated_mib" in result:
        memory += f", CUDA max allocated {result['cuda_max_allocated_mib']:.0f} MiB"
    print(f"memory: {memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
