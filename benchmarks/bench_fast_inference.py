"""CPU inference speed of the fast path against the plain model (detectron2's, when installed).

For Mask R-CNN R50-FPN (detectron2's Base-RCNN-FPN with masks) and the sephv14_10 recipe, at
800 x 1067 (detectron2's test size of a 480 x 640 COCO image), it times on one random image:

* **plain**: the model as the backend builds it (real detectron2 v0.6 when it is installed and
  chosen, so the baseline is detectron2's own code; otherwise sephnet's portable core);
* **fp32 fast path**: ``optimize_for_inference`` (frozen BN folded, channels-last, EvoNormS0
  for inference, ROIAlign's boxes over the threads, NMS that stops at the top 100);
* **bf16 fast path**: the same under bfloat16 autocast;

and checks that the fp32 fast path gives the same detections (boxes within 1e-2 px, scores
within 1e-4, same classes) and how many bf16 detections match. Weights are random, with every
FrozenBN's statistics set from its input on one forward pass so activations stay in range, and
a zero test score threshold: the heads see the full 1000 proposals and 100 detections (an upper
bound). The last lines read, e.g.::

    fp32 fast path vs detectron2: 1.42x (same detections)
    bf16 fast path vs detectron2: 2.10x

Usage (``SEPHNET_BACKEND=core`` to time the portable core where detectron2 is installed)::

    python benchmarks/bench_fast_inference.py [--runs 5] [--warmup 1] [--threads N] [--size 800 1067]
        [--models NAME ...] [--nchw] [--profile N]
"""
import argparse
import copy
import functools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from sephnet import add_sephnet_config
from sephnet.backend import BACKEND, FrozenBatchNorm2d, build_model, get_cfg
from sephnet.engine.fast_inference import native_bf16_available, optimize_for_inference

MODELS = {
    "R50-FPN Mask R-CNN": ("configs/Base-RCNN-FPN.yaml", ["MODEL.MASK_ON", "True",
                                                          "MODEL.RESNETS.DEPTH", "50"]),
    "sephv14_10 recipe": ("configs/coco/Mask-RCNN-FPN-sephv14_10.yaml", []),
}


def model_cfg(config_file: str, opts: List[str]):
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                                "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    return cfg


@torch.no_grad()
def calibrate_frozen_bn(model: torch.nn.Module, image: torch.Tensor) -> None:
    """Set each FrozenBN's mean/variance to its input's on ``image`` (one forward pass)."""
    def hook(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + module.eps)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, FrozenBatchNorm2d)]
    model([{"image": image}])
    for h in handles:
        h.remove()


def timed_interleaved(fns: Dict[str, Callable[[], object]], warmup: int,
                      runs: int) -> Dict[str, float]:
    """Median seconds of each of ``fns``, run in turns (A B C A B C ...) so that a change in the
    machine's load during the measurement hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {label: [] for label in fns}
    for _ in range(runs):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}


def compare(plain, fast) -> Tuple[bool, int]:
    """(same detections, how many of ``fast``'s match one of ``plain``'s): a match has the same
    class, every box coordinate within 1e-2 px and the score within 1e-4. Detections are paired
    by matching rather than by position, since untrained models give near-equal scores whose
    order rounding can swap."""
    a, b = plain["instances"], fast["instances"]
    box_diff = (a.pred_boxes.tensor[:, None, :] - b.pred_boxes.tensor[None, :, :]).abs()
    close = ((box_diff.max(dim=2).values <= 1e-2)
             & ((a.scores[:, None] - b.scores[None, :]).abs() <= 1e-4)
             & (a.pred_classes[:, None] == b.pred_classes[None, :]))
    taken = torch.zeros(len(a), dtype=torch.bool)
    matched = 0
    for j in range(len(b)):
        candidates = torch.nonzero(close[:, j] & ~taken).flatten()
        if len(candidates):
            taken[candidates[0]] = True
            matched += 1
    return matched == len(a) == len(b), matched


def profile_table(fn: Callable[[], object], rows: int) -> str:
    """torch.profiler's operator table of one call of ``fn``, sorted by self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1067), metavar=("H", "W"))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--nchw", action="store_true",
                        help="also time the fp32 fast path without channels-last")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N most expensive operators of one forward of "
                             "each variant (torch.profiler, self CPU time)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    baseline = "detectron2" if BACKEND == "detectron2" else "the plain core"
    print(f"backend {BACKEND}, torch {torch.__version__}, {args.threads} threads, native bf16: "
          f"{native_bf16_available()}, image {args.size[0]}x{args.size[1]}, median of {args.runs} "
          f"interleaved runs; load average {_load()}")
    ratios: Dict[str, List[float]] = {"fp32": [], "bf16": []}
    same_all = True
    for name in args.models:
        config_file, opts = MODELS[name]
        cfg = model_cfg(config_file, opts)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        image = torch.rand(3, *args.size) * 255
        calibrate_frozen_bn(model, image)
        fast = optimize_for_inference(copy.deepcopy(model))
        fast_bf16 = optimize_for_inference(copy.deepcopy(model), bf16=True)
        variants = {"plain": model, "fp32": fast, "bf16": fast_bf16}
        if args.nchw:
            variants["fp32 nchw"] = optimize_for_inference(copy.deepcopy(model),
                                                           channels_last=False)
        with torch.no_grad():
            outputs = {label: m([{"image": image}])[0] for label, m in variants.items()}
            seconds = timed_interleaved(
                {label: functools.partial(m, [{"image": image}]) for label, m in variants.items()},
                args.warmup, args.runs)
            if args.profile:
                for label, m in variants.items():
                    print(f"--- {name}, {label}: top {args.profile} operators by self CPU time")
                    print(profile_table(functools.partial(m, [{"image": image}]), args.profile))
        same, _ = compare(outputs["plain"], outputs["fp32"])
        _, bf16_matching = compare(outputs["plain"], outputs["bf16"])
        same_all &= same
        for key in ("fp32", "bf16"):
            ratios[key].append(seconds["plain"] / seconds[key])
        print(f"{name}: plain {seconds['plain']:.3f} s, fp32 fast {seconds['fp32']:.3f} s "
              f"({seconds['plain'] / seconds['fp32']:.2f}x, same detections: {same}), bf16 fast "
              f"{seconds['bf16']:.3f} s ({seconds['plain'] / seconds['bf16']:.2f}x, "
              f"{bf16_matching}/{len(outputs['plain']['instances'])} detections within fp32 "
              "tolerances)")
        if args.nchw:
            same_nchw, _ = compare(outputs["plain"], outputs["fp32 nchw"])
            print(f"{name}: fp32 fast without channels-last {seconds['fp32 nchw']:.3f} s "
                  f"({seconds['plain'] / seconds['fp32 nchw']:.2f}x, same detections: {same_nchw})")
    print(f"load average at the end: {_load()}")
    fp32 = statistics.mean(ratios["fp32"])
    bf16 = statistics.mean(ratios["bf16"])
    print(f"fp32 fast path vs {baseline}: {fp32:.2f}x "
          f"({'same detections' if same_all else 'DETECTIONS DIFFER'})")
    print(f"bf16 fast path vs {baseline}: {bf16:.2f}x")


if __name__ == "__main__":
    main()
