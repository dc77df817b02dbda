"""Regenerate the README's pictures from a quickstart run, with the project's own commands.

1. ``python train_net.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml``
   (skipped when ``--run-dir`` already holds ``model_final.pth`` and ``metrics.json``);
2. ``python -m sephnet.demo --scale 2`` on the first ``--num-images`` images of
   ``shapes_val``, with the run's final weights; the drawings are tiled into
   ``quickstart_predictions.png`` (256 colours, to keep the file small);
3. ``python -m sephnet.tools.plot_metrics`` on the run's ``metrics.json`` →
   ``quickstart_curves.png``.

Usage::

    python benchmarks/make_readme_figures.py [--run-dir output/quickstart] \\
        [--out benchmarks/figures] [--num-images 6] [--columns 3]

Training takes minutes on CPU; the rest seconds.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from typing import List

import cv2
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # import this checkout's sephnet even when it is not installed
CONFIG = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")


def _run(command: List[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def _val_images(count: int) -> List[str]:
    """File names of the first ``count`` images of ``shapes_val`` (generated if missing)."""
    import sephnet.data  # noqa: F401  (registers shapes_val)
    from sephnet.backend import DatasetCatalog

    return [d["file_name"] for d in DatasetCatalog.get("shapes_val")[:count]]


def tile(images: List[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Lay out images (H_i, W_i, 3) on a white grid; cells are the largest image's size,
    each image centred in its cell, ``gap`` pixels between cells."""
    cell_h = max(i.shape[0] for i in images)
    cell_w = max(i.shape[1] for i in images)
    rows = -(-len(images) // columns)
    canvas = np.full(
        (rows * cell_h + (rows - 1) * gap, columns * cell_w + (columns - 1) * gap, 3),
        255,
        dtype=np.uint8,
    )
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        y = r * (cell_h + gap) + (cell_h - image.shape[0]) // 2
        x = c * (cell_w + gap) + (cell_w - image.shape[1]) // 2
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=os.path.join(ROOT, "output", "quickstart"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "figures"))
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--columns", type=int, default=3)
    args = parser.parse_args()

    weights = os.path.join(args.run_dir, "model_final.pth")
    metrics = os.path.join(args.run_dir, "metrics.json")
    if not (os.path.isfile(weights) and os.path.isfile(metrics)):
        _run([sys.executable, "train_net.py", "--config-file", CONFIG,
              "OUTPUT_DIR", args.run_dir])
    os.makedirs(args.out, exist_ok=True)

    inputs = _val_images(args.num_images)
    with tempfile.TemporaryDirectory() as drawn:
        _run([sys.executable, "-m", "sephnet.demo", "--config-file", CONFIG,
              "--input", *inputs, "--output", drawn + os.sep, "--scale", "2",
              "--opts", "MODEL.WEIGHTS", weights])
        images = [cv2.imread(os.path.join(drawn, os.path.basename(p))) for p in inputs]
    predictions = os.path.join(args.out, "quickstart_predictions.png")
    grid = Image.fromarray(tile(images, args.columns)[:, :, ::-1])
    grid.quantize(colors=256, dither=Image.Dither.NONE).save(predictions, optimize=True)
    print(f"Wrote {predictions}")

    _run([sys.executable, "-m", "sephnet.tools.plot_metrics", metrics, "--labels", "quickstart",
          "--output", os.path.join(args.out, "quickstart_curves.png")])


if __name__ == "__main__":
    main()
