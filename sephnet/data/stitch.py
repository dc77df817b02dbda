"""The original's "stitch" augmentation (docs/components.md#stitch-augmentation): two images
of a training batch pasted into one.

With probability ``prob`` per batch (``MODEL.SEPH.STITCH.PROB``; sephNv15: 0.2), a random
pair (i, j) of the batch's images is stitched into one image that replaces image i (image j
stays in the batch as well)::

    canvas H x W = the batch's largest height and width (the padded batch size)
    layout: stacked, each image fitted into H//2 x W   |  side by side, each into H x W//2
            (the layout that leaves less of the canvas empty; stacked on a tie)

      +-----------+         +-----+-----+
      | image i   |         |  i  |  j  |
      +-----------+   or    |     |     |
      | image j   |         +-----+-----+
      +-----------+

Each image is resized keeping its aspect ratio to fit its half (a side may fall short of the
half; the rest is 0), placed at the half's top-left corner, and its boxes are scaled and
shifted with it; the instances of both images are kept. Batches of one image are unchanged.
Masks are not supported (the log's stitch row is box-only); setup refuses MASK_ON with it.
"""
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

from sephnet.backend import Boxes, Instances

__all__ = ["fit_into", "stitch_pair", "stitch_batches", "StitchedBatches", "ResumableStitchedBatches"]


def fit_into(width: int, height: int, target_w: int, target_h: int) -> Tuple[int, int]:
    """The largest ``(w, h)`` with the aspect of ``width x height`` inside the target.

    The side that binds gets the target's size exactly; the other is rounded down.
    """
    if width < 1 or height < 1:
        return target_w, target_h
    if width * target_h >= height * target_w:
        return target_w, int(height * target_w / width)
    return int(width * target_h / height), target_h


def _layout(sizes: List[Tuple[int, int]], canvas: Tuple[int, int]):
    """Per image ``(x0, y0, w, h)`` on the canvas, for the layout that wastes less area."""
    big_h, big_w = canvas
    stacked = [fit_into(w, h, big_w, big_h // 2) for h, w in sizes]
    side = [fit_into(w, h, big_w // 2, big_h) for h, w in sizes]
    if sum(w * h for w, h in stacked) >= sum(w * h for w, h in side):
        return [(0, 0, *stacked[0]), (0, big_h // 2, *stacked[1])]
    return [(0, 0, *side[0]), (big_w // 2, 0, *side[1])]


def stitch_pair(first: Dict, second: Dict, canvas: Tuple[int, int]) -> Dict:
    """One training dict holding ``first`` and ``second`` stitched on a ``canvas`` (H, W).

    Args:
        first, second: detectron2 training dicts: ``image`` a ``[C, H_i, W_i]`` tensor and
            ``instances`` with ``gt_boxes`` (XYXY pixels) and ``gt_classes``.
        canvas: (H, W) of the result.

    Returns:
        A dict with ``image`` ``[C, H, W]`` (same dtype), ``instances`` of both images on
        the canvas, ``height``/``width`` = H/W and the other keys of ``first``.

    Raises:
        ValueError: an input's instances carry masks or keypoints.
    """
    big_h, big_w = canvas
    images = [first["image"], second["image"]]
    places = _layout([tuple(im.shape[-2:]) for im in images], canvas)
    out = torch.zeros((images[0].shape[0], big_h, big_w), dtype=images[0].dtype)
    parts = []
    for item, image, (x0, y0, w, h) in zip((first, second), images, places):
        resized = cv2.resize(
            np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
        if resized.ndim == 2:
            resized = resized[:, :, None]
        out[:, y0:y0 + h, x0:x0 + w] = torch.from_numpy(resized).permute(2, 0, 1)
        instances = item["instances"]
        extra = sorted(set(instances.get_fields()) - {"gt_boxes", "gt_classes"})
        if extra:
            raise ValueError(f"stitch supports boxes and classes only; the instances carry {extra}.")
        scale = torch.tensor(
            [w / image.shape[-1], h / image.shape[-2]] * 2, dtype=torch.float32
        )
        shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        part = Instances((big_h, big_w))
        part.gt_boxes = Boxes(instances.gt_boxes.tensor * scale + shift)
        part.gt_classes = instances.gt_classes
        parts.append(part)
    result = {k: v for k, v in first.items() if k not in ("image", "instances")}
    result.update(image=out, instances=Instances.cat(parts), height=big_h, width=big_w)
    return result


def _stitch_batch(batch: List[Dict], prob: float, rng: np.random.Generator) -> List[Dict]:
    """``batch``, with probability ``prob`` one random pair of it stitched first."""
    if len(batch) >= 2 and rng.random() < prob:
        i, j = rng.choice(len(batch), size=2, replace=False)
        canvas = (
            max(item["image"].shape[-2] for item in batch),
            max(item["image"].shape[-1] for item in batch),
        )
        batch = list(batch)
        batch[i] = stitch_pair(batch[i], batch[j], canvas)
    return batch


class StitchedBatches:
    """The batches of a loader, each stitched with probability ``prob`` (an iterable like the
    loader it wraps; iteration starts the wrapped loader lazily, on the first ``next()``)."""

    def __init__(self, batches: Iterable[List[Dict]], prob: float,
                 generator: Optional[np.random.Generator] = None):
        self.batches = batches
        self.prob = prob
        self.rng = generator if generator is not None else np.random.default_rng()

    def __iter__(self) -> Iterator[List[Dict]]:
        for batch in self.batches:
            yield _stitch_batch(batch, self.prob, self.rng)


class ResumableStitchedBatches(StitchedBatches):
    """:class:`StitchedBatches` of a resumable loader (``state_dict``/``load_state_dict``, as the
    core's train loader), resumable itself: its state is the loader's plus the random
    generator's, so a resumed run continues the same stitched stream without reading the
    consumed batches again."""

    def state_dict(self) -> Dict:
        return {"loader": self.batches.state_dict(), "stitch_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Dict) -> None:
        """Continue after the state's last batch (call before the first ``next()``).

        Raises:
            KeyError: ``state`` is not a stitched loader's state.
        """
        missing = [key for key in ("loader", "stitch_rng") if key not in state]
        if missing:
            raise KeyError(f"Stitched train loader state lacks {missing}; got keys {sorted(state)}.")
        self.batches.load_state_dict(state["loader"])
        self.rng.bit_generator.state = state["stitch_rng"]


def stitch_batches(
    batches: Iterable[List[Dict]], prob: float, generator: Optional[np.random.Generator] = None
) -> StitchedBatches:
    """The batches of ``batches``, each stitched with probability ``prob`` (one random pair of
    the batch; batches of one image pass unchanged).

    Args:
        batches: an iterable of lists of training dicts (detectron2's train loader).
        prob: per-batch probability in [0, 1].
        generator: the random source (a fresh unseeded one by default).

    Returns:
        A :class:`ResumableStitchedBatches` when ``batches`` is resumable, else a
        :class:`StitchedBatches`.
    """
    resumable = hasattr(batches, "state_dict") and hasattr(batches, "load_state_dict")
    return (ResumableStitchedBatches if resumable else StitchedBatches)(batches, prob, generator)
