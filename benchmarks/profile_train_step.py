"""Where a CPU training step's time goes, and how long a step takes.

Builds the model, optimizer and training loader of a config (as ``train_net.py`` does), fetches
``--warmup + --steps`` batches first (the median fetch time is printed as data loading), then
times that many optimiser steps (forward, backward, step) on them. Prints the first step's
losses (to check that a code change left the numbers alone), the median step time and,
optionally, a torch.profiler operator table and the Python functions with the largest own time
(cProfile), both over ``--steps`` more steps::

    python benchmarks/profile_train_step.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml
    python benchmarks/profile_train_step.py --config-file configs/coco/Mask-RCNN-FPN-sephv14_10.yaml \\
        --opts DATASETS.TRAIN "('shapes_train',)" MODEL.ROI_HEADS.NUM_CLASSES 3 MODEL.WEIGHTS "" \\
        INPUT.MIN_SIZE_TRAIN "(256,)" INPUT.MAX_SIZE_TRAIN 341 SOLVER.IMS_PER_BATCH 2
    ... [--steps 5] [--warmup 1] [--threads 1] [--ops 20] [--functions 25]

To compare two versions of the code, run the script from each checkout in turns (A B A B)
with the same ``--threads`` and ``--seed`` and ``DATALOADER.NUM_WORKERS 0`` (the same batches,
so the first step's losses must agree) and compare the medians.
"""
import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from sephnet.backend import DefaultTrainer, EventStorage, describe, get_event_storage
from sephnet.data import build_train_loader
from sephnet.solver import build_optimizer
from sephnet.tools.config_loading import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps (default 1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--ops", type=int, default=0, metavar="N",
                        help="print torch.profiler's N most expensive operators (self CPU time)")
    parser.add_argument("--functions", type=int, default=0, metavar="N",
                        help="print cProfile's N Python functions with the largest own time")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds Python, NumPy and torch (initial weights and the order of the "
                             "batches; with DATALOADER.NUM_WORKERS 0 two runs see the same data)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, args.opts)
    print(f"{args.config_file}: {describe()}, torch {torch.__version__}, {args.threads} threads, "
          f"{cfg.SOLVER.IMS_PER_BATCH} images/step, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = DefaultTrainer.build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    loader = iter(build_train_loader(cfg))
    extra = args.steps if (args.ops or args.functions) else 0
    batches, fetch_times = [], []
    for _ in range(args.warmup + args.steps + extra):
        start = time.perf_counter()
        batches.append(next(loader))
        fetch_times.append(time.perf_counter() - start)

    with EventStorage(0):
        storage = get_event_storage()

        def step(batch) -> Dict[str, float]:
            losses = model(batch)
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            storage.iter += 1
            return {k: float(v.detach()) for k, v in losses.items()}

        first = step(batches[0])
        print("first step losses: " + ", ".join(f"{k} {v:.6f}" for k, v in sorted(first.items())))
        for batch in batches[1:args.warmup]:
            step(batch)
        times: List[float] = []
        for batch in batches[args.warmup:args.warmup + args.steps]:
            start = time.perf_counter()
            step(batch)
            times.append(time.perf_counter() - start)
        print(f"train step: median {statistics.median(times):.3f} s (min {min(times):.3f}, "
              f"max {max(times):.3f}, {args.steps} steps); data loading: median "
              f"{statistics.median(fetch_times):.3f} s/batch")
        profiled = batches[args.warmup + args.steps:]
        if args.ops:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for batch in profiled:
                    step(batch)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))
        if args.functions:
            profiler = cProfile.Profile()
            profiler.enable()
            for batch in profiled:
                step(batch)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.functions)
            print(out.getvalue())


if __name__ == "__main__":
    main()
