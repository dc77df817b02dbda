"""What a config's model costs: FLOPs, parameters, activations and its module structure.

detectron2's ``tools/analyze_model.py`` for sephnet configs, on a synthetic input of a
chosen size (no dataset needed)::

    python -m sephnet.tools.analyze_model --config-file configs/coco/Mask-RCNN-FPN-sephv14_10.yaml
    python -m sephnet.tools.analyze_model --config-file X --tasks flop parameter --input-size 800 1333
    python -m sephnet.tools.analyze_model --config-file X --tasks structure activation

Counting rules (fvcore's, as in detectron2's tool): one fused multiply-add counts as one
flop, for convolutions, linear layers, matmuls and einsums; element-wise operations, NMS and
ROIAlign are not counted (the tool lists what it skipped). Counts depend on how many
proposals and detections the heads see, so the analysis runs the model at **full load**
(with the initial weights: ``MODEL.WEIGHTS`` is not loaded, as no count depends on it): score thresholds 0 and NMS
thresholds 1 (nothing suppressed) in the RPN and the box heads, so the RPN passes
``POST_NMS_TOPK_TEST`` proposals on and the box head returns ``TEST.DETECTIONS_PER_IMAGE``
detections to the mask head. detectron2's tool averages over real images with trained
weights, which gives fewer detections and a smaller mask-head share.

``--input-size H W`` is the network input after resizing (default: the test resize of a
4:3 image, e.g. 800 x 1067 for COCO configs); the image is padded to the backbone's size
divisibility as usual.
"""
import argparse
import logging
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from fvcore.nn import (
    ActivationCountAnalysis,
    FlopCountAnalysis,
    flop_count_table,
    parameter_count,
    parameter_count_table,
)

from sephnet.backend import CfgNode, build_model, setup_logger
from sephnet.engine.fast_inference import refuse_fast_inference
from sephnet.tools.config_loading import load_config
from sephnet.tools.inference_adapter import InferenceAdapter

__all__ = ["TASKS", "default_input_size", "full_load_config", "build_for_analysis",
           "count_flops", "count_activations", "analyze", "main"]

TASKS = ("flop", "parameter", "activation", "structure")
logger = logging.getLogger("sephnet.tools.analyze_model")


def default_input_size(cfg: CfgNode, aspect: float = 4.0 / 3.0) -> Tuple[int, int]:
    """(H, W) of a landscape image of width/height ``aspect`` after the test resize:
    short side ``INPUT.MIN_SIZE_TEST``, long side capped at ``INPUT.MAX_SIZE_TEST``."""
    short = int(cfg.INPUT.MIN_SIZE_TEST)
    long_side = short * aspect
    if cfg.INPUT.MAX_SIZE_TEST and long_side > cfg.INPUT.MAX_SIZE_TEST:
        short = short * cfg.INPUT.MAX_SIZE_TEST / long_side
        long_side = cfg.INPUT.MAX_SIZE_TEST
    return int(short + 0.5), int(long_side + 0.5)


def full_load_config(cfg: CfgNode) -> CfgNode:
    """A copy of ``cfg`` on the CPU at full load: test score thresholds 0 and NMS thresholds 1
    (see the module docstring)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 1.0
    cfg.MODEL.RPN.NMS_THRESH = 1.0
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.NMS_THRESH_TEST = 1.0
    cfg.freeze()
    return cfg


def build_for_analysis(cfg: CfgNode) -> torch.nn.Module:
    """The eval-mode model of ``cfg`` with its initial weights: no count reported here depends
    on weight values, so ``MODEL.WEIGHTS`` is not loaded (nor downloaded)."""
    return build_model(cfg).eval()


def synthetic_image(cfg: CfgNode, size: Tuple[int, int]) -> torch.Tensor:
    """The image (3, H, W) whose every pixel is ``MODEL.PIXEL_MEAN``.

    FLOP counts do not depend on pixel values, only on shapes and on how many boxes pass
    each stage; the mean image keeps activations of random weights near zero (noise through
    an untrained ResNet with frozen BN grows to ~1e4 and the RPN's box deltas then push most
    anchors out of the image), so full load is reached with any weights.
    """
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1)
    return mean.expand(-1, *size).contiguous()


def count_flops(model: torch.nn.Module, image: torch.Tensor) -> FlopCountAnalysis:
    """fvcore's FLOP analysis of one inference of ``model`` on ``image`` (3, H, W)."""
    analysis = FlopCountAnalysis(InferenceAdapter(model), (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def count_activations(model: torch.nn.Module, image: torch.Tensor) -> ActivationCountAnalysis:
    """fvcore's activation count (output elements of convs and linear layers)."""
    analysis = ActivationCountAnalysis(InferenceAdapter(model), (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def _strip_adapter_prefix(table: str) -> str:
    # The adapter adds one "model." level; the tables read as detectron2's without it.
    return table.replace(" model.", " ")


def analyze(cfg: CfgNode, tasks: Sequence[str], input_size: Tuple[int, int],
            max_depth: int = 3) -> Dict[str, object]:
    """Run ``tasks`` on ``cfg``'s model; returns {task: result} where flop/activation give
    {"total": count, "table": str, "unsupported": {op: n}}, parameter gives {"total": n,
    "table": str}, structure the module repr."""
    cfg = full_load_config(cfg)
    model = build_for_analysis(cfg)
    image = synthetic_image(cfg, input_size)
    results: Dict[str, object] = {}
    with torch.no_grad():
        if "flop" in tasks:
            flops = count_flops(model, image)
            total = flops.total()
            results["flop"] = {
                "total": total,
                "table": _strip_adapter_prefix(flop_count_table(flops, max_depth=max_depth + 1)),
                "by_module": {k[len("model."):]: v for k, v in flops.by_module().items()
                              if k.startswith("model.") and k.count(".") == 1},
                "unsupported": dict(flops.unsupported_ops()),
            }
        if "activation" in tasks:
            acts = count_activations(model, image)
            results["activation"] = {
                "total": acts.total(),
                "table": _strip_adapter_prefix(flop_count_table(acts, max_depth=max_depth + 1)),
                "unsupported": dict(acts.unsupported_ops()),
            }
    if "parameter" in tasks:
        results["parameter"] = {
            "total": parameter_count(model)[""],
            "table": parameter_count_table(model, max_depth=max_depth),
        }
    if "structure" in tasks:
        results["structure"] = str(model)
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.analyze_model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["flop", "parameter"],
                        help="what to report (default: flop parameter)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                        help="network input size after resizing (default: the test resize "
                        "of a 4:3 image)")
    parser.add_argument("--max-depth", type=int, default=3, help="module depth of the tables")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides, KEY VALUE pairs")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    try:
        cfg = load_config(args.config_file, args.opts, device="cpu")
        refuse_fast_inference(cfg, "analyze_model", "counts the plain model")
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"analyze_model: {e}", file=sys.stderr)
        return 1
    size = tuple(args.input_size) if args.input_size else default_input_size(cfg)
    if min(size) <= 0:
        print(f"analyze_model: --input-size {size} must be positive", file=sys.stderr)
        return 1
    results = analyze(cfg, args.tasks, size, max_depth=args.max_depth)
    print(f"{args.config_file} at input {size[0]}x{size[1]} (full load: "
          f"{cfg.MODEL.RPN.POST_NMS_TOPK_TEST} proposals, "
          f"{cfg.TEST.DETECTIONS_PER_IMAGE} detections)")
    if "flop" in results:
        flops = results["flop"]
        print(f"\nFLOPs (one multiply-add = 1): {flops['total'] / 1e9:.2f} G")
        print(flops["table"])
        if flops["unsupported"]:
            print("Not counted (no FLOP rule): " + ", ".join(
                f"{op} x{n}" for op, n in sorted(flops["unsupported"].items())))
    if "activation" in results:
        print(f"\nActivations: {results['activation']['total'] / 1e6:.2f} M")
        print(results["activation"]["table"])
    if "parameter" in results:
        print(f"\nParameters: {results['parameter']['total'] / 1e6:.2f} M")
        print(results["parameter"]["table"])
    if "structure" in results:
        print("\nStructure:\n" + results["structure"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
