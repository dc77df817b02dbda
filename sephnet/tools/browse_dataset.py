"""Draw a dataset's ground truth, as annotated or as the model will see it in training.

detectron2's ``tools/visualize_data.py`` for sephnet configs::

    # the annotations of the config's DATASETS.TRAIN, on the original images
    python -m sephnet.tools.browse_dataset --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \\
        --source annotation --output output/browse --num 8
    # after the training data path (resizing, flips and whatever augmentations the config
    # switches on), exactly as the training loader yields the batches
    python -m sephnet.tools.browse_dataset --config-file X --source dataloader --output output/browse

Each image is written as ``<output>/<image file name>.png`` (dataloader: numbered, since an
image can come out several times with different augmentations). Boxes, masks and class names
are drawn by the backend's ``Visualizer``; class names come from the dataset's metadata.
"""
import argparse
import os
import sys
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from sephnet.backend import (
    CfgNode,
    DatasetCatalog,
    MetadataCatalog,
    detection_utils,
    import_module,
)
from sephnet.data import build_train_loader
from sephnet.tools.config_loading import load_config

__all__ = ["SOURCES", "annotation_images", "dataloader_images", "main"]

SOURCES = ("annotation", "dataloader")


def _visualizer():
    return import_module("utils.visualizer").Visualizer


def annotation_images(cfg: CfgNode, num: int, scale: float = 1.0
                      ) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, RGB drawing) of the first ``num`` images of ``DATASETS.TRAIN`` with their
    annotations as loaded (before any transform)."""
    Visualizer = _visualizer()
    done = 0
    for dataset in cfg.DATASETS.TRAIN:
        metadata = MetadataCatalog.get(dataset)
        for dic in DatasetCatalog.get(dataset):
            if done >= num:
                return
            image = detection_utils.read_image(dic["file_name"], format="RGB")
            drawn = Visualizer(image, metadata, scale=scale).draw_dataset_dict(dic).get_image()
            yield os.path.splitext(os.path.basename(dic["file_name"]))[0], drawn
            done += 1


def _to_rgb(image, input_format: str) -> np.ndarray:
    """The loader's CHW tensor in ``INPUT.FORMAT`` as an HWC RGB uint8 array."""
    array = image.permute(1, 2, 0).cpu().numpy()
    return detection_utils.convert_image_to_rgb(array, input_format)


def dataloader_images(cfg: CfgNode, num: int, scale: float = 1.0
                      ) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, RGB drawing) of the first ``num`` items the training loader yields, with their
    ``instances`` (boxes, classes and masks after the training transforms)."""
    Visualizer = _visualizer()
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    classes = metadata.get("thing_classes", None)
    done = 0
    for batch in build_train_loader(cfg):
        for item in batch:
            if done >= num:
                return
            image = _to_rgb(item["image"], cfg.INPUT.FORMAT)
            target = item["instances"]
            labels = [classes[c] if classes else str(c) for c in target.gt_classes.tolist()]
            masks = target.gt_masks if target.has("gt_masks") else None
            drawn = Visualizer(image, metadata, scale=scale).overlay_instances(
                boxes=target.gt_boxes, labels=labels, masks=masks).get_image()
            name = os.path.splitext(os.path.basename(item.get("file_name", "image")))[0]
            yield f"{done:04d}_{name}", drawn
            done += 1


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.browse_dataset",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--source", choices=SOURCES, default="annotation")
    parser.add_argument("--output", required=True, help="folder for the drawings")
    parser.add_argument("--num", type=int, default=16, help="how many images (default 16)")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing size factor")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides, KEY VALUE pairs")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if args.num < 1 or args.scale <= 0:
            raise ValueError(f"--num must be >= 1 and --scale > 0; got {args.num}, {args.scale}")
        cfg = load_config(args.config_file, args.opts, device="cpu")
        source = annotation_images if args.source == "annotation" else dataloader_images
        os.makedirs(args.output, exist_ok=True)
        written = 0
        for name, drawn in source(cfg, args.num, args.scale):
            cv2.imwrite(os.path.join(args.output, f"{name}.png"), drawn[:, :, ::-1])
            written += 1
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"browse_dataset: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {written} images to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
