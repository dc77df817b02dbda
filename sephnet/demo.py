"""Draw a model's predictions (masks, boxes, class names, scores) on images.

detectron2's ``demo/demo.py`` for image files::

    python -m sephnet.demo --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \\
        --input "datasets/shapes/val/00000[1-4].png" --output demo_out/ \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Flags are detectron2's: ``--config-file``, ``--input`` (files or glob patterns; one
quoted pattern is expanded here), ``--output`` (a folder, or a file name for a single
input), ``--confidence-threshold`` (default 0.5) and ``--opts`` (config overrides).
Unlike detectron2's demo there is no window (``--output`` is required) and no webcam or
video input; ``--scale`` (an addition) enlarges the drawings, which keeps labels from
covering small images. The model runs through the backend's :class:`DefaultPredictor` and the
drawing is done by the backend's ``utils.visualizer.Visualizer``; class names come from
the metadata of ``DATASETS.TEST[0]``.
"""
import argparse
import glob
import logging
import os
import sys
import time
from typing import List, Optional, Sequence

from sephnet import add_sephnet_config, validate_sephnet_config  # also registers components
from sephnet.backend import (
    CfgNode,
    DefaultPredictor,
    MetadataCatalog,
    detection_utils,
    get_cfg,
    import_module,
    setup_logger,
)
from sephnet.engine.fast_inference import fast_inference_model

__all__ = ["get_parser", "setup_cfg", "expand_inputs", "output_paths", "main"]

logger = logging.getLogger("sephnet.demo")


def get_parser() -> argparse.ArgumentParser:
    """The demo's command line (detectron2's image flags)."""
    parser = argparse.ArgumentParser(
        prog="python -m sephnet.demo",
        description="Write images with a model's predicted masks, boxes, classes and scores.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="image files or glob patterns, e.g. 'datasets/shapes/val/*.png'",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="folder for the drawn images (created when it ends with '/' or several inputs "
        "are given), or a file name when there is a single input",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score for an instance to be shown (default 0.5)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size of the drawings relative to the input images (default 1.0); labels keep "
        "their size, so 2.0 suits images of a few hundred pixels",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The config ``train_net.py`` would build (detectron2's and sephnet's defaults ← config
    file ← ``--opts``), then the confidence threshold as the test score threshold of the box
    heads (``MODEL.ROI_HEADS``, ``MODEL.RETINANET``, and ``MODEL.PANOPTIC_FPN.COMBINE`` for a
    PanopticFPN); checked
    by :func:`validate_sephnet_config` and frozen.

    Raises:
        ValueError: the threshold is outside [0, 1], or sephnet's keys disagree.
    """
    threshold = args.confidence_threshold
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--confidence-threshold={threshold}; expected a score in [0, 1].")
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = threshold
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":  # the key is refused where nothing reads it
        cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = threshold
    validate_sephnet_config(cfg)
    cfg.freeze()
    return cfg


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Image paths from ``--input``: each argument is a file or a glob pattern (sorted).

    Raises:
        FileNotFoundError: an argument matches no file.
    """
    paths: List[str] = []
    for pattern in inputs:
        if os.path.isfile(pattern):
            paths.append(pattern)
            continue
        matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"--input {pattern!r} matches no file.")
        paths.extend(matches)
    return paths


def output_paths(inputs: Sequence[str], output: str) -> List[str]:
    """Where each input's drawing goes.

    ``output`` is a folder (``<output>/<input file name>``) when it is an existing folder,
    ends with a path separator, or there are several inputs; the folder is created.
    Otherwise it is the file name for the single input.

    Raises:
        ValueError: two inputs share a file name, so their drawings would overwrite each
            other in the folder.
    """
    as_folder = os.path.isdir(output) or output.endswith(("/", os.sep)) or len(inputs) > 1
    if not as_folder:
        parent = os.path.dirname(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        return [output]
    os.makedirs(output, exist_ok=True)
    names = [os.path.basename(p) for p in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Several inputs are named {duplicates}; their drawings would overwrite each "
            f"other in {output!r}. Run the demo once per folder."
        )
    return [os.path.join(output, n) for n in names]


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    """Run the demo; returns the written image paths. Progress is logged to the
    ``sephnet.demo`` logger (set up by the command line, not by this function).

    Raises:
        FileNotFoundError / ValueError: see :func:`expand_inputs`, :func:`output_paths`,
            :func:`setup_cfg`; ``--scale`` is not positive.
    """
    args = get_parser().parse_args(argv)
    if args.scale <= 0:
        raise ValueError(f"--scale={args.scale}; expected a positive number.")
    cfg = setup_cfg(args)
    inputs = expand_inputs(args.input)
    outputs = output_paths(inputs, args.output)

    visualizer = import_module("utils.visualizer")
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    predictor = DefaultPredictor(cfg)
    predictor.model = fast_inference_model(cfg, predictor.model)
    for path, out_path in zip(inputs, outputs):
        image = detection_utils.read_image(path, format="BGR")
        start = time.perf_counter()
        instances = predictor(image)["instances"].to("cpu")
        logger.info(
            "%s: detected %d instances in %.2fs", path, len(instances), time.perf_counter() - start
        )
        drawer = visualizer.Visualizer(
            image[:, :, ::-1], metadata, scale=args.scale, instance_mode=visualizer.ColorMode.IMAGE
        )
        drawer.draw_instance_predictions(instances).save(out_path)
    logger.info("Wrote %d image(s) to %s", len(outputs), args.output)
    return outputs


if __name__ == "__main__":
    setup_logger(name="fvcore")
    setup_logger(name="sephnet")
    setup_logger()
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        sys.exit(1)
