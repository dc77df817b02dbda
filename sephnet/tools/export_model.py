"""Export a config's inference model to TorchScript or ONNX and check it against PyTorch.

detectron2's ``tools/deploy/export_model.py`` (tracing method) for sephnet configs::

    python -m sephnet.tools.export_model --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \\
        --format onnx --output output/export MODEL.WEIGHTS output/quickstart/model_final.pth
    python -m sephnet.tools.export_model --config-file X --format torchscript --output DIR \\
        --sample-image a.png --sample-image b.png MODEL.WEIGHTS W

The model is built and exported on the CPU (``MODEL.DEVICE`` is set to cpu). What is exported
is :class:`~sephnet.tools.inference_adapter.InferenceAdapter`: one image tensor
(3, H, W), already resized by the test resize and in ``INPUT.FORMAT``, to ``pred_boxes`` (R, 4,
input coordinates), ``scores`` (R), ``pred_classes`` (R) and, with masks, ``pred_masks``
(R, 1, M, M mask probabilities; paste them with ``paste_adapter_masks``). The model is traced on
the first sample image; ONNX inputs have dynamic height and width (opset 16; the core's NMS and
ROIAlign become ONNX ``NonMaxSuppression`` and ``RoiAlign``), the TorchScript file replays the
traced graph (load it with ``torch.jit.load`` after ``import sephnet`` when it holds the core's
traced operators). The check runs PyTorch and the export (TorchScript, or onnxruntime on the CPU)
on every sample image — by default the first 3 images of ``DATASETS.TEST[0]`` — and prints the
largest difference of each output; it fails (exit code 2) when the detections differ in number
or classes, or the boxes by more than ``--max-box-diff`` pixels.

What cannot be exported, and why: tracing records one path through Python control flow, so
anything whose control flow depends on values is fixed to the example's path. In the detectron2
models and sephnet's heads the data-dependent parts are tensor operations (NMS, top-k, boolean
selection), so they export; the checks above are how to confirm it for a config. Not exported
at all: training (losses, sampling), test-time augmentation (it loops over augmented copies in
Python), and models whose ROI count decides a Python branch (e.g. a head that handles zero ROIs
in Python); the check reports such a model by its mismatching outputs.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sephnet.backend import (
    CfgNode,
    DatasetCatalog,
    DetectionCheckpointer,
    build_model,
    detection_utils,
    transforms,
)
from sephnet.engine.fast_inference import refuse_fast_inference
from sephnet.tools.config_loading import load_config
from sephnet.tools.inference_adapter import InferenceAdapter

__all__ = ["FORMATS", "sample_inputs", "export", "compare", "main"]

FORMATS = ("onnx", "torchscript")


def sample_inputs(cfg: CfgNode, paths: Sequence[str], count: int = 3) -> List[torch.Tensor]:
    """Model inputs (3, H, W float, ``INPUT.FORMAT``, test-resized) of ``paths``, or of the
    first ``count`` images of ``DATASETS.TEST[0]`` when no path is given."""
    if not paths:
        paths = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:count]]
    resize = transforms.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--sample-image {path!r} does not exist.")
        image = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
        image = resize.get_transform(image).apply_image(image)
        images.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float())
    return images


def export(adapter: InferenceAdapter, example: torch.Tensor, fmt: str, output_dir: str) -> str:
    """Trace ``adapter`` on ``example`` and write ``model.onnx`` or ``model.ts``; returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    with torch.no_grad():
        if fmt == "torchscript":
            path = os.path.join(output_dir, "model.ts")
            traced = torch.jit.trace(adapter, (example,), check_trace=False, strict=False)
            traced.save(path)
            return path
        from sephnet.tools.onnx_symbolics import OPSET, register_onnx_symbolics

        register_onnx_symbolics()
        path = os.path.join(output_dir, "model.onnx")
        dynamic = {"image": {1: "height", 2: "width"}}
        dynamic.update({name: {0: "detections"} for name in adapter.output_names})
        torch.onnx.export(adapter, (example,), path, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=adapter.output_names,
                          dynamic_axes=dynamic)
        return path


def _runner(path: str, fmt: str):
    if fmt == "torchscript":
        module = torch.jit.load(path)

        def run(image):
            with torch.no_grad():
                return [t.numpy() for t in module(image)]

        return run
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image.numpy()})


def _by_score(outputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    order = np.argsort(-np.asarray(outputs[1]), kind="stable")
    return [np.asarray(o)[order] for o in outputs]


def compare(adapter: InferenceAdapter, path: str, fmt: str, images: Sequence[torch.Tensor]
            ) -> List[Dict[str, float]]:
    """Per image: the detection counts of PyTorch and the export, and (when they agree) the
    largest absolute difference of each output, detections paired by decreasing score."""
    run = _runner(path, fmt)
    report = []
    for image in images:
        with torch.no_grad():
            expected = _by_score([t.numpy() for t in adapter(image)])
        actual = _by_score(run(image))
        row: Dict[str, float] = {"detections": len(expected[0]),
                                 "exported_detections": len(actual[0])}
        if len(expected[0]) == len(actual[0]):
            for name, e, a in zip(adapter.output_names, expected, actual):
                row[name] = float(np.abs(e.astype(np.float64) - a).max()) if e.size else 0.0
        report.append(row)
    return report


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.export_model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--output", required=True, help="folder for the exported file")
    parser.add_argument("--sample-image", action="append", default=[],
                        help="image to trace with and check on (repeatable; default: the "
                        "first 3 images of DATASETS.TEST[0])")
    parser.add_argument("--max-box-diff", type=float, default=1e-2,
                        help="largest box difference (pixels) the check accepts (default 0.01)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser


def _check_failures(report: List[Dict[str, float]], max_box_diff: float) -> List[str]:
    problems = []
    for i, row in enumerate(report):
        if row["detections"] != row["exported_detections"]:
            problems.append(f"image {i}: {row['detections']} detections in PyTorch, "
                            f"{row['exported_detections']} exported")
        elif row.get("pred_classes", 0) > 0:
            problems.append(f"image {i}: classes differ")
        elif row.get("pred_boxes", 0) > max_box_diff:
            problems.append(f"image {i}: boxes differ by {row['pred_boxes']:.4g} px")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    import sephnet  # noqa: F401  (registers components and the built-in datasets)

    args = get_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts, device="cpu")
        refuse_fast_inference(cfg, "export_model", "exports the plain model (the fast path's "
                              "threads and in-place layers are for evaluation in PyTorch)")
        model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        images = sample_inputs(cfg, args.sample_image)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 1
    adapter = InferenceAdapter(model)
    path = export(adapter, images[0], args.format, args.output)
    print(f"Exported {args.format} to {path} (outputs: {', '.join(adapter.output_names)})")
    report = compare(adapter, path, args.format, images)
    for i, row in enumerate(report):
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in row.items()
                          if k not in ("detections", "exported_detections"))
        print(f"image {i} ({tuple(images[i].shape[1:])}): {row['detections']} detections "
              f"(export: {row['exported_detections']}); max difference: {diffs or '-'}")
    problems = _check_failures(report, args.max_box_diff)
    if problems:
        print("Export check FAILED: " + "; ".join(problems), file=sys.stderr)
        return 2
    worst = max((row.get("pred_boxes", 0.0) for row in report), default=0.0)
    print(f"Export check passed: max box difference {worst:.3g} px over {len(report)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
