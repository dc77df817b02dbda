"""What each row of the experiment log costs: GFLOPs, parameters and CPU latency.

Ablation tables report cost beside accuracy; this measures it for every row of the index
(``configs/coco/ablations.yaml``) at one input size and writes a JSON file that
``python -m sephnet.tools.results_table --readme`` turns into the README table's cost columns::

    python -m sephnet.tools.row_costs --output benchmarks/results/row_costs.json
    python -m sephnet.tools.row_costs --rows "sephv14*" --input-size 800 1333 --latency-iter 5
    # on a shared machine: one thread, latency as CPU time on a smaller input
    OMP_NUM_THREADS=1 python -m sephnet.tools.row_costs --latency-size 320 427 --clock cpu

Per row: GFLOPs and parameters from :mod:`sephnet.tools.analyze_model` (full load, one
multiply-add = 1 flop) at ``--input-size``, and the median time of ``--latency-iter``
inferences of the same full-load model (after one warm-up) at ``--latency-size`` (default: the
input size) with the machine's torch threads — a worst case, since real images with trained
weights pass fewer boxes to the heads. ``--clock wall`` times elapsed seconds; ``--clock cpu``
the process's CPU seconds, which other processes on a busy machine inflate far less (with
one torch thread it is the latency on one quiet core). The file records both sizes, the
clock, the machine and torch's thread count, so figures from different settings are not
mixed up.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from sephnet.tools.ablation_index import load_index, select_rows
from sephnet.tools.analyze_model import analyze, build_for_analysis, full_load_config, synthetic_image
from sephnet.tools.benchmark import machine_summary
from sephnet.tools.config_loading import load_config
from sephnet.tools.inference_adapter import InferenceAdapter

__all__ = ["measure_row", "load_costs", "main"]

DEFAULT_SIZE = (800, 1067)  # detectron2's test resize of a 480 x 640 COCO image


#: --clock choices: how a latency is timed.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _latency(cfg, size: Tuple[int, int], iterations: int, clock: str) -> float:
    model = InferenceAdapter(build_for_analysis(full_load_config(cfg)))
    image = synthetic_image(cfg, size)
    now = CLOCKS[clock]
    times = []
    with torch.no_grad():
        for i in range(iterations + 1):
            start = now()
            model(image)
            if i:  # the first call is the warm-up
                times.append(now() - start)
    return statistics.median(times)


def measure_row(config_file: str, size: Tuple[int, int], latency_iter: int,
                latency_size: Optional[Tuple[int, int]] = None, clock: str = "wall"
                ) -> Dict[str, float]:
    """{"gflops", "params_m", "latency_s"} of one config: counts at ``size``, latency at
    ``latency_size`` (default ``size``) on ``clock`` ("wall" or "cpu"); latency_s is None when
    ``latency_iter`` is 0."""
    cfg = load_config(config_file, device="cpu")
    counts = analyze(cfg, ["flop", "parameter"], size)
    return {
        "gflops": counts["flop"]["total"] / 1e9,
        "params_m": counts["parameter"]["total"] / 1e6,
        "latency_s": (_latency(cfg, latency_size or size, latency_iter, clock)
                      if latency_iter > 0 else None),
    }


def load_costs(path: str) -> Dict[str, Dict[str, float]]:
    """``{row id: {"gflops", "params_m", "latency_s"}}`` from a file this tool wrote.

    Raises:
        ValueError: the file is not such a JSON object.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict):
        raise ValueError(f"{path}: expected an object with 'rows' (written by row_costs).")
    return data["rows"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.row_costs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=os.path.join("configs", "coco", "ablations.yaml"))
    parser.add_argument("--rows", nargs="*", default=[], help="row ids or glob patterns (all)")
    parser.add_argument("--input-size", nargs=2, type=int, default=DEFAULT_SIZE,
                        metavar=("H", "W"))
    parser.add_argument("--latency-iter", type=int, default=3,
                        help="timed inferences per row (0: no latency)")
    parser.add_argument("--latency-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input of the latency runs (default: --input-size)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="latency as elapsed (wall) or process CPU seconds (default: wall)")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results",
                                                         "row_costs.json"))
    args = parser.parse_args(argv)
    rows = [r for r in load_index(args.index) if r.runnable]
    if args.rows:
        rows = select_rows(rows, args.rows)
    size = tuple(args.input_size)
    latency_size = tuple(args.latency_size or size)
    costs: Dict[str, Dict[str, float]] = {}
    for row in rows:
        costs[row.id] = measure_row(row.config, size, args.latency_iter, latency_size, args.clock)
        c = costs[row.id]
        latency = "-" if c["latency_s"] is None else f"{c['latency_s']:.2f} s"
        print(f"{row.id}: {c['gflops']:.1f} GFLOPs, {c['params_m']:.1f} M params, {latency}",
              flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump({"input_size": list(size), "latency_size": list(latency_size),
                   "clock": args.clock, "latency_iter": args.latency_iter,
                   "machine": machine_summary("cpu", backend_location=False),
                   "rows": costs}, f, indent=1)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
