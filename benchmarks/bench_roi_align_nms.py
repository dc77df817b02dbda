"""Time the portable core's ROIAlign and NMS on CPU (and torchvision's, when usable).

Usage: python benchmarks/bench_roi_align_nms.py [--repeat 3] [--threads N]

Prints the best of ``--repeat`` wall-clock times in seconds for:

* ROIAlign (aligned=True, adaptive sampling_ratio=0) of 1000 ROIs on a 1x256x200x300
  feature map at spatial_scale 1/8 (an 1600x2400 image), output 7x7 and 14x14, forward
  and forward+backward;
* nms of 10000 random boxes (sizes 10-300 px in a 1333x800 image) at IoU 0.5 and 0.7,
  and batched_nms of the same boxes in 80 classes.

Each line shows the core's own PyTorch implementation; when torchvision's ops are usable
a second column shows them and the largest absolute difference between the two.
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from sephnet.d2.layers.nms import _batched_nms_coordinate_trick, _batched_nms_per_group, _nms_pytorch  # noqa: E402
from sephnet.d2.layers.roi_align import _roi_align_pytorch  # noqa: E402
from sephnet.d2.layers.torchvision_ops import torchvision_ops, torchvision_status  # noqa: E402


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def random_rois(num: int, image_hw, generator: torch.Generator) -> torch.Tensor:
    height, width = image_hw
    sizes = torch.exp(torch.empty(num, 2).uniform_(torch.log(torch.tensor(16.0)).item(), torch.log(torch.tensor(600.0)).item(), generator=generator))
    x1 = torch.rand(num, generator=generator) * (width - sizes[:, 0])
    y1 = torch.rand(num, generator=generator) * (height - sizes[:, 1])
    return torch.stack([torch.zeros(num), x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1]], dim=1)


def random_boxes(num: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(num, 2, generator=generator) * torch.tensor([1333.0, 800.0])
    wh = 10 + torch.rand(num, 2, generator=generator) * 290
    return torch.cat([xy, xy + wh], dim=1)


def report(name: str, ours: float, theirs: Optional[float], diff: Optional[float]) -> None:
    line = f"{name:<48s} core {ours:8.4f}s"
    if theirs is not None:
        line += f"   torchvision {theirs:8.4f}s   max|diff| {diff:.2e}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = torchvision_ops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, torchvision: {torchvision_status()}")
    gen = torch.Generator().manual_seed(0)

    feats = torch.randn(1, 256, 200, 300, generator=gen)
    rois = random_rois(1000, (1600, 2400), gen)
    for size in (7, 14):
        ours_out = _roi_align_pytorch(feats, rois, (size, size), 0.125, 0, True)
        ours = best_time(lambda: _roi_align_pytorch(feats, rois, (size, size), 0.125, 0, True), args.repeat)
        theirs = diff = None
        if ops is not None:
            theirs = best_time(lambda: ops.roi_align(feats, rois, (size, size), 0.125, 0, True), args.repeat)
            diff = (ops.roi_align(feats, rois, (size, size), 0.125, 0, True) - ours_out).abs().max().item()
        report(f"roi_align 1000 rois, 256x200x300, out {size}, fwd", ours, theirs, diff)

    grad_feats = feats.clone().requires_grad_()

    def forward_backward(fn):
        def run():
            grad_feats.grad = None
            fn(grad_feats, rois, (7, 7), 0.125, 0, True).sum().backward()

        return run

    ours = best_time(forward_backward(_roi_align_pytorch), args.repeat)
    theirs = None
    if ops is not None:
        theirs = best_time(forward_backward(lambda *a: ops.roi_align(*a)), args.repeat)
    report("roi_align 1000 rois, out 7, fwd+bwd", ours, theirs, 0.0 if theirs is not None else None)

    boxes = random_boxes(10000, gen)
    scores = torch.rand(10000, generator=gen)
    classes = torch.randint(0, 80, (10000,), generator=gen)
    for threshold in (0.5, 0.7):
        keep = _nms_pytorch(boxes, scores, threshold)
        ours = best_time(lambda: _nms_pytorch(boxes, scores, threshold), args.repeat)
        theirs = diff = None
        if ops is not None:
            theirs = best_time(lambda: ops.nms(boxes, scores, threshold), args.repeat)
            diff = float(not torch.equal(ops.nms(boxes, scores, threshold), keep))
        report(f"nms 10000 boxes, iou {threshold} ({len(keep)} kept)", ours, theirs, diff)
    for name, fn in (("coordinate trick", _batched_nms_coordinate_trick), ("per class", _batched_nms_per_group)):
        ours = best_time(lambda: fn(boxes, scores, classes, 0.5), args.repeat)
        report(f"batched_nms 10000 boxes, 80 classes, {name}", ours, None, None)


if __name__ == "__main__":
    main()
