"""Memory of COCO evaluation over a few thousand images: does resident memory stay flat?

Usage: python benchmarks/bench_eval_memory.py [--images 3000] [--height 480] [--width 640]
                                              [--detections 20] [--every 500]

A synthetic COCO dataset (json only: ``--images`` images of ``--height`` x ``--width`` with two
rectangle instances each) is registered, and ``inference_on_dataset`` runs ``COCOEvaluator``
(bbox + segm) on the outputs of a stand-in model that returns ``--detections`` full-image-size
``pred_masks`` per image near the ground truth (so the evaluator sees what Mask R-CNN's
postprocessing hands it, without the model's cost). Prints resident memory (current and
peak, MiB) every ``--every`` images, after ``evaluate()``, and how much a full-size mask
store would have needed for comparison. Flat memory: the per-1000-image growth is small
next to the full-size figure (the evaluator keeps RLE strings).
"""
import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from sephnet.d2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from sephnet.d2.evaluation import COCOEvaluator, inference_on_dataset  # noqa: E402
from sephnet.d2.structures import Boxes, Instances  # noqa: E402


def rss_mib() -> float:
    """Current resident set size of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def boxes_of(image_id: int, height: int, width: int) -> List[List[float]]:
    """Two deterministic XYWH ground-truth boxes inside the image."""
    g = np.random.RandomState(image_id)
    out = []
    for _ in range(2):
        w, h = g.uniform(0.1, 0.4) * width, g.uniform(0.1, 0.4) * height
        x, y = g.uniform(0, width - w), g.uniform(0, height - h)
        out.append([float(x), float(y), float(w), float(h)])
    return out


def write_dataset(path: str, num: int, height: int, width: int) -> None:
    images, annotations = [], []
    for i in range(1, num + 1):
        images.append({"id": i, "file_name": f"{i}.png", "height": height, "width": width})
        for k, (x, y, w, h) in enumerate(boxes_of(i, height, width)):
            annotations.append({
                "id": 2 * i + k, "image_id": i, "category_id": 1 + k, "bbox": [x, y, w, h],
                "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


class FakeMaskRCNN:
    """Returns ``detections`` jittered copies of the ground truth as Mask R-CNN outputs:
    ``pred_boxes`` [D, 4], ``scores`` [D], ``pred_classes`` [D], ``pred_masks`` [D, H, W] bool."""

    def __init__(self, detections: int, every: int, log: List[str]):
        self.detections, self.every, self.log = detections, every, log
        self.seen = 0
        self.start = time.perf_counter()

    def __call__(self, batch: List[Dict[str, Any]]) -> List[Dict[str, Instances]]:
        outs = []
        for d in batch:
            h, w, image_id = d["height"], d["width"], d["image_id"]
            g = np.random.RandomState(10**6 + image_id)
            gt = boxes_of(image_id, h, w)
            boxes, masks, classes = [], torch.zeros(self.detections, h, w, dtype=torch.bool), []
            for j in range(self.detections):
                x, y, bw, bh = gt[j % 2]
                x1, y1 = max(0.0, x + g.uniform(-5, 5)), max(0.0, y + g.uniform(-5, 5))
                x2, y2 = min(w - 1.0, x1 + bw), min(h - 1.0, y1 + bh)
                boxes.append([x1, y1, x2, y2])
                masks[j, int(y1):int(y2) + 1, int(x1):int(x2) + 1] = True
                classes.append(j % 2)
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(torch.tensor(boxes))
            inst.scores = torch.tensor(g.uniform(0.05, 1.0, self.detections), dtype=torch.float32)
            inst.pred_classes = torch.tensor(classes)
            inst.pred_masks = masks
            outs.append({"instances": inst})
            self.seen += 1
            if self.seen % self.every == 0:
                self.log.append(f"{self.seen:>8d} {rss_mib():>12.1f} {peak_rss_mib():>9.1f} "
                                f"{time.perf_counter() - self.start:>8.1f}")
        return outs


class ListLoader:
    def __init__(self, dicts: List[Dict[str, Any]]):
        self.dicts = dicts

    def __len__(self) -> int:
        return len(self.dicts)

    def __iter__(self):
        for d in self.dicts:
            yield [d]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--detections", type=int, default=20)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        json_file = os.path.join(tmp, "synthetic.json")
        write_dataset(json_file, args.images, args.height, args.width)
        name = "bench_eval_memory"
        dicts = [{"image_id": i, "height": args.height, "width": args.width}
                 for i in range(1, args.images + 1)]
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(json_file=json_file, thing_classes=["a", "b"],
                                      thing_dataset_id_to_contiguous_id={1: 0, 2: 1})
        log: List[str] = []
        before = rss_mib()
        evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), output_dir=tmp)
        model = FakeMaskRCNN(args.detections, args.every, log)
        print(f"{args.images} images {args.height}x{args.width}, {args.detections} masks each; "
              f"RSS before: {before:.1f} MiB")
        print(f"{'images':>8} {'RSS MiB':>12} {'peak MiB':>9} {'seconds':>8}")
        results = inference_on_dataset(model, ListLoader(dicts), evaluator)
        for line in log:
            print(line)
        print(f"after evaluate(): RSS {rss_mib():.1f} MiB, peak {peak_rss_mib():.1f} MiB")
        full = args.images * args.detections * args.height * args.width / 2**20
        print(f"full-size uint8 masks of all images would take {full:.0f} MiB")
        print(f"segm AP {results['segm']['AP']:.1f}, bbox AP {results['bbox']['AP']:.1f}")


if __name__ == "__main__":
    main()
