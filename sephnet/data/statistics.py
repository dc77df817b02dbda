"""Counts of a COCO instances file: classes, objects per image, object sizes, box shapes.

Example::

    # the clutter dataset's two splits (generated first if needed)
    python -m sephnet.data.statistics
    # any COCO instances json
    python -m sephnet.data.statistics datasets/coco/annotations/instances_val2017.json
"""
import argparse
import json
from collections import Counter
from typing import Any, Dict, Optional, Sequence

import numpy as np

__all__ = ["AREA_BINS", "dataset_statistics", "main"]

#: Area bin edges (px^2) of :func:`dataset_statistics`; 32^2 and 96^2 are COCO's
#: small/medium/large limits.
AREA_BINS = (0, 8 ** 2, 16 ** 2, 32 ** 2, 64 ** 2, 96 ** 2, float("inf"))


def dataset_statistics(coco: Dict[str, Any]) -> Dict[str, Any]:
    """Counts of a COCO instances dict (any dataset, not only clutter).

    Returns:
        ``{"images", "objects", "per_class": {name: count}, "objects_per_image": {"min",
        "mean", "max", "histogram": {count: images}}, "area_histogram": {"lo-hi": objects}
        (AREA_BINS), "small_fraction" (area < 32^2), "box_aspect": {"p5", "p50", "p95"}
        (width / height)}``.
    """
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    counts = [per_image.get(img["id"], 0) for img in coco["images"]]
    areas = np.array([a["area"] for a in coco["annotations"]], np.float64)
    aspects = np.array([a["bbox"][2] / a["bbox"][3] for a in coco["annotations"]], np.float64)
    hist, _ = np.histogram(areas, bins=np.array(AREA_BINS))
    labels = [f"{lo:g}-{hi:g}" for lo, hi in zip(AREA_BINS[:-1], AREA_BINS[1:])]
    return {
        "images": len(coco["images"]),
        "objects": len(coco["annotations"]),
        "per_class": {names[k]: n for k, n in sorted(Counter(a["category_id"] for a in coco["annotations"]).items())},
        "objects_per_image": {"min": min(counts), "mean": round(float(np.mean(counts)), 2), "max": max(counts),
                              "histogram": dict(sorted(Counter(counts).items()))},
        "area_histogram": dict(zip(labels, hist.tolist())),
        "small_fraction": round(float((areas < 32 ** 2).mean()), 3),
        "box_aspect": {f"p{q}": round(float(np.percentile(aspects, q)), 2) for q in (5, 50, 95)},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the statistics of each json given (default: both clutter splits) as JSON."""
    parser = argparse.ArgumentParser(prog="python -m sephnet.data.statistics",
                                     description="Counts of COCO instances files.")
    parser.add_argument("json_files", nargs="*", help="COCO instances files (default: clutter)")
    args = parser.parse_args(argv)
    paths = args.json_files
    if not paths:
        from sephnet.data.clutter import clutter_json_files

        paths = clutter_json_files()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            print(path, json.dumps(dataset_statistics(json.load(f)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
