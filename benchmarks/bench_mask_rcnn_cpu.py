"""CPU speed of the portable core's Mask R-CNN R50-FPN at detectron2's default input sizes.

Prints the median seconds per image for inference (shortest edge 800, longest at most 1333,
``TEST.DETECTIONS_PER_IMAGE`` = 100) and the median seconds per training iteration (forward,
backward and an SGD step on ``--train-batch`` images of the same size, each with a few random
boxes and polygon masks), after warm-up runs.

Weights are random (nothing is downloaded). Untrained FrozenBN layers are identity maps, so
activations would grow through the 50 layers until every RPN box covers the whole image and
NMS leaves a couple of proposals, which would make the heads look free. The benchmark therefore
first sets every FrozenBN's statistics to those of its input on a random image (one forward
pass), so the RPN yields the full 1000 proposals, and a zero test score threshold sends the
maximum of 100 detections to the mask head: the inference figure is an upper bound.

With ``--profile`` it also reports, from one profiled inference and one training iteration, the
cumulative time spent in the hot paths: anchor generation, ROI pooling, NMS, RPN proposal
selection, Fast R-CNN inference and mask pasting.

Usage:
    python benchmarks/bench_mask_rcnn_cpu.py [--runs 3] [--warmup 1] [--threads N] [--profile]
"""
import argparse
import cProfile
import os
import pstats
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import FrozenBatchNorm2d
from sephnet.d2.layers.torchvision_ops import torchvision_status
from sephnet.d2.modeling.meta_arch import build_model
from sephnet.d2.structures import Boxes, Instances, PolygonMasks
from sephnet.d2.utils.events import EventStorage

# (label, file suffix, function name) of the hot paths reported by --profile.
HOT_PATHS = [
    ("anchors", "anchor_generator.py", "forward"),
    ("ROI pooler", "poolers.py", "forward"),
    ("NMS (all calls)", "nms.py", "batched_nms"),
    ("RPN top-k + NMS", "proposal_utils.py", "find_top_rpn_proposals"),
    ("fast_rcnn_inference", "fast_rcnn.py", "fast_rcnn_inference"),
    ("paste masks", "mask_ops.py", "paste_masks_in_image"),
    ("backbone", "fpn.py", "forward"),
]


def mask_rcnn_r50_fpn_cfg():
    """detectron2's Base-RCNN-FPN + mask_rcnn_R_50_FPN_1x model settings, on CPU."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
            "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH", 50,
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]],
            "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000,
            "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 1000,
            "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
            "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC", 2,
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
            "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14,
            "MODEL.MASK_ON", True,
            "MODEL.DEVICE", "cpu",
        ]
    )
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    return cfg


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """Output size of ``ResizeShortestEdge(short_edge, max_size)`` for an image of this size."""
    scale = short_edge / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def random_gt(height: int, width: int, count: int, generator: torch.Generator) -> Instances:
    """``count`` random boxes (at least 32 px a side) with square polygon masks and classes."""
    x0 = torch.rand(count, generator=generator) * (width - 64)
    y0 = torch.rand(count, generator=generator) * (height - 64)
    w = 32 + torch.rand(count, generator=generator) * (width - x0 - 32)
    h = 32 + torch.rand(count, generator=generator) * (height - y0 - 32)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
    gt = Instances((height, width))
    gt.gt_boxes = Boxes(boxes)
    gt.gt_classes = torch.randint(0, 80, (count,), generator=generator)
    gt.gt_masks = PolygonMasks(
        [[[a, b, c, b, c, d, a, d]] for a, b, c, d in boxes.tolist()]
    )
    return gt


def calibrate_frozen_bn(model: torch.nn.Module, image: torch.Tensor) -> None:
    """Give every ``FrozenBatchNorm2d`` the per-channel mean/variance of its input on ``image``
    (C, H, W), layer after layer in one eval forward, so random-weight activations stay O(1)."""

    def set_statistics(module: FrozenBatchNorm2d, inputs: Tuple[torch.Tensor]) -> None:
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [
        m.register_forward_pre_hook(set_statistics)
        for m in model.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model.backbone(model.preprocess_image([{"image": image}]).tensor)
    for handle in handles:
        handle.remove()
    model.train(was_training)


def timed(fn: Callable[[], object], warmup: int, runs: int) -> List[float]:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def hot_path_seconds(fn: Callable[[], object]) -> Dict[str, float]:
    """Cumulative seconds per hot path during one call of ``fn`` (cProfile)."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    found: Dict[str, float] = {}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.items():
        for label, suffix, function in HOT_PATHS:
            if filename.endswith(suffix) and name == function:
                found[label] = found.get(label, 0.0) + cumulative
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs (median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step")
    parser.add_argument("--original-size", type=int, nargs=2, default=(480, 640),
                        metavar=("H", "W"), help="image size before the default resize")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--profile", action="store_true", help="report hot-path times")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    cfg = mask_rcnn_r50_fpn_cfg()
    model = build_model(cfg)

    orig_h, orig_w = args.original_size
    test_h, test_w = resized_shape(orig_h, orig_w, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    train_h, train_w = resized_shape(
        orig_h, orig_w, max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"torchvision ops: {torchvision_status()}")

    image = torch.randint(0, 256, (3, test_h, test_w), generator=generator).float()
    calibrate_frozen_bn(model, image)
    inference_inputs = [{"image": image, "height": orig_h, "width": orig_w}]

    def infer() -> int:
        with torch.no_grad():
            return len(model(inference_inputs)[0]["instances"])

    if not args.skip_inference:
        model.eval()
        seconds = timed(infer, args.warmup, args.runs)
        print(f"inference  {test_h}x{test_w}: {statistics.median(seconds):.3f} s/image "
              f"(median of {args.runs}: {', '.join(f'{s:.3f}' for s in seconds)}; "
              f"{infer()} detections)")
        if args.profile:
            for label, value in sorted(hot_path_seconds(infer).items(), key=lambda kv: -kv[1]):
                print(f"    inference hot path {label:<22s} {value:8.3f} s")

    if args.skip_train:
        return
    batch = [
        {
            "image": torch.randint(0, 256, (3, train_h, train_w), generator=generator).float(),
            "instances": random_gt(train_h, train_w, 3, generator),
        }
        for _ in range(args.train_batch)
    ]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    storage = EventStorage(0)

    def train_step() -> None:
        with storage:
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()

    model.train()
    seconds = timed(train_step, args.warmup, args.runs)
    print(f"training   {args.train_batch} x {train_h}x{train_w}: "
          f"{statistics.median(seconds):.3f} s/iter "
          f"(median of {args.runs}: {', '.join(f'{s:.3f}' for s in seconds)})")
    if args.profile:
        for label, value in sorted(hot_path_seconds(train_step).items(), key=lambda kv: -kv[1]):
            print(f"    training hot path  {label:<22s} {value:8.3f} s")


if __name__ == "__main__":
    main()
