"""Non-maximum suppression with torchvision's exact semantics.

``nms`` keeps, greedily in order of decreasing score, every box whose IoU with all boxes
kept before it is not greater than ``iou_threshold``. Equal scores keep their input order
(a stable sort). IoU is computed in the boxes' dtype with torchvision's operation order,
``inter / (area_i + area_j - inter)``, and compared as torchvision does (against the
threshold as a double), so both paths keep the same boxes.

When torchvision's compiled ops are usable (see :mod:`.torchvision_ops`) they are called.
Otherwise a vectorised PyTorch implementation runs in two steps:

1. find every pair of boxes whose IoU exceeds the threshold (an edge list), testing
   only pairs close enough in x1 and y1 to reach the threshold;
2. resolve the greedy order on the score-sorted ranks block by block: a block's
   candidates are the ranks not suppressed by an already kept earlier rank, and inside
   the block the decision is the unique fixed point of
   ``keep[i] = candidate[i] and not any(keep[j] for edges j -> i)``, reached by iterating
   the equation (each pass settles at least one more rank).
"""
from typing import Iterator, List, Tuple

import torch

from .torchvision_ops import torchvision_ops
from .traced_ops import traced_nms

__all__ = ["nms", "batched_nms"]

_BLOCK = 2048  # score ranks resolved together in the greedy pass
_PAIRS_PER_CHUNK = 1 << 21  # candidate pairs whose IoU is evaluated at once


def _threshold_in(dtype: torch.dtype, iou_threshold: float, device: torch.device) -> torch.Tensor:
    """A 0-d threshold t of ``dtype`` such that ``iou > t`` (compared in ``dtype``) equals
    torchvision's ``iou > iou_threshold`` (compared in double): the threshold rounded down."""
    t = torch.tensor(iou_threshold, dtype=dtype, device=device)
    if float(t) > iou_threshold:
        t = torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype, device=device))
    return t


def _window_pairs(
    starts: torch.Tensor, ends: torch.Tensor
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Enumerate pairs (p, q) with ``starts[p] <= q < ends[p]``, in chunks of at most
    about ``_PAIRS_PER_CHUNK`` pairs. Yields (p, q) int64 tensors."""
    num = len(starts)
    counts = (ends - starts).clamp(min=0)
    totals = torch.cumsum(counts, 0)
    positions = torch.arange(num, device=starts.device)
    lo = 0
    while lo < num:
        done = int(totals[lo - 1]) if lo > 0 else 0
        hi = int(torch.searchsorted(totals, done + _PAIRS_PER_CHUNK, right=True))
        hi = min(max(hi, lo + 1), num)
        chunk_counts = counts[lo:hi]
        owner = torch.repeat_interleave(positions[lo:hi], chunk_counts)
        within = torch.arange(len(owner), device=starts.device) - (torch.cumsum(chunk_counts, 0) - chunk_counts)[owner - lo]
        yield owner, starts[owner] + within
        lo = hi


def _suppression_edges(boxes: torch.Tensor, iou_threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """All pairs (i, j), i < j, of rows of ``boxes`` whose IoU exceeds the threshold.

    Only pairs that can reach the threshold are tested. For t >= 0, IoU > t implies an
    overlap width above t * max(w_i, w_j) (and the same for heights), hence
    ``|x1_i - x1_j| < (1 - t) * w`` of the box further left and
    ``|y1_i - y1_j| < (1 - t) * h`` of the box further up. So the boxes are cut into
    horizontal bands of height ``(1 - t) * max(h)`` by y1 and sorted by (band, x1); a
    box is compared with the boxes after it in its own band whose x1 is below
    ``x1 + (1 - t) * w`` and with the boxes of the next band whose x1 is within
    ``(-(1 - t) * max(w), (1 - t) * w)`` of its own. The bounds use 0.1% slack; the exact
    IoU test follows. A negative threshold suppresses even disjoint boxes, so then every
    pair is a candidate.

    Args:
        boxes: Tensor[N, 4] float32/float64 (x1, y1, x2, y2).
        iou_threshold: the nms threshold.

    Returns:
        (first, second): int64 Tensor[E] each, indices into ``boxes``, first < second.
    """
    device = boxes.device
    num = len(boxes)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    threshold = _threshold_in(boxes.dtype, iou_threshold, device)
    x1, y1, x2, y2 = boxes.double().unbind(1)
    positions = torch.arange(num, device=device)
    if iou_threshold < 0:
        order = positions
        windows = [(positions + 1, torch.full_like(positions, num))]
    else:
        shrink = 1.0 - iou_threshold * (0.999 if iou_threshold >= 0.01 else 0.0)
        widths, heights = (x2 - x1).clamp(min=0), (y2 - y1).clamp(min=0)
        max_w = float(widths.max())
        band_height = shrink * float(heights.max()) * (1 + 1e-9) + 1e-9
        band = torch.floor((y1 - y1.min()) / band_height)
        # Renumber the occupied bands 0, 1, 2, ... to keep the key below exactly
        # representable magnitudes; neighbouring bands stay neighbours (skipping empty
        # ones only adds candidates).
        band = torch.unique(band, return_inverse=True)[1].double()
        # One key axis for (band, x1): bands are spaced further apart than any window.
        band_span = float(x2.max() - x1.min()) + 2 * max_w + 2
        key = band * band_span + (x1 - x1.min() + max_w + 1)
        order = torch.argsort(key, stable=True)
        key = key[order].contiguous()
        reach = shrink * widths[order]
        windows = [
            (positions + 1, torch.searchsorted(key, key + reach)),
            (
                torch.searchsorted(key, key + band_span - shrink * max_w, right=True),
                torch.searchsorted(key, key + band_span + reach),
            ),
        ]

    # Columns in (band, x1) order, contiguous so that gathers are plain index_select.
    bx1, by1, bx2, by2 = (c.contiguous() for c in boxes[order].unbind(1))
    sorted_areas = areas[order].contiguous()
    firsts: List[torch.Tensor] = []
    seconds: List[torch.Tensor] = []
    for starts, ends in windows:
        for p, q in _window_pairs(starts, ends):
            iw = torch.minimum(bx2.index_select(0, p), bx2.index_select(0, q))
            iw -= torch.maximum(bx1.index_select(0, p), bx1.index_select(0, q))
            ih = torch.minimum(by2.index_select(0, p), by2.index_select(0, q))
            ih -= torch.maximum(by1.index_select(0, p), by1.index_select(0, q))
            inter = iw.clamp_(min=0) * ih.clamp_(min=0)
            over = inter / (sorted_areas.index_select(0, p) + sorted_areas.index_select(0, q) - inter) > threshold
            a, b = order[p[over]], order[q[over]]
            firsts.append(torch.minimum(a, b))
            seconds.append(torch.maximum(a, b))
    if not firsts:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return empty, empty
    return torch.cat(firsts), torch.cat(seconds)


def _greedy_keep(num: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Greedy selection over ranks 0..num-1 given suppression edges src -> dst (src < dst):
    rank i is kept iff no kept rank has an edge to it.

    Returns:
        bool Tensor[num].
    """
    device = src.device
    keep = torch.ones(num, dtype=torch.bool, device=device)
    by_dst = torch.argsort(dst)
    src, dst = src[by_dst], dst[by_dst]
    for start in range(0, num, _BLOCK):
        stop = min(start + _BLOCK, num)
        lo, hi = torch.searchsorted(dst, torch.tensor([start, stop], device=device)).tolist()
        if lo == hi:
            continue
        block_src, block_dst = src[lo:hi], dst[lo:hi] - start
        from_earlier = block_src < start
        candidate = torch.ones(stop - start, dtype=torch.bool, device=device)
        candidate[block_dst[from_earlier][keep[block_src[from_earlier]]]] = False
        inner_src, inner_dst = block_src[~from_earlier] - start, block_dst[~from_earlier]
        local = candidate
        while True:
            hit = torch.zeros_like(candidate)
            hit[inner_dst[local[inner_src]]] = True
            updated = candidate & ~hit
            if torch.equal(updated, local):
                break
            local = updated
        keep[start:stop] = local
    return keep


def _nms_pytorch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Pure-PyTorch greedy NMS; same contract as :func:`nms`."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    first, second = _suppression_edges(boxes, iou_threshold)
    rank_first, rank_second = rank[first], rank[second]
    keep = _greedy_keep(len(order), torch.minimum(rank_first, rank_second), torch.maximum(rank_first, rank_second))
    return order[keep]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (``torchvision.ops.nms``).

    Args:
        boxes: Tensor[N, 4] in (x1, y1, x2, y2) format with ``x1 <= x2``, ``y1 <= y2``.
        scores: Tensor[N].
        iou_threshold: boxes with IoU strictly greater than this with a higher-scoring
            kept box are discarded.

    Returns:
        int64 Tensor[K]: indices of the kept boxes, sorted by decreasing score (equal
        scores in input order).
    """
    ops = torchvision_ops()
    if ops is not None:
        return ops.nms(boxes, scores, iou_threshold)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: scores must have shape [{boxes.shape[0]}], got {tuple(scores.shape)}")
    if torch.jit.is_tracing():
        return traced_nms(boxes, scores, float(iou_threshold))
    return _nms_pytorch(boxes, scores, iou_threshold)


def _batched_nms_coordinate_trick(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """One nms call over all groups: each group is shifted by a disjoint coordinate offset."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_per_group(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """One nms call per group (as torchvision does for many boxes); result sorted by score."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        members = torch.where(idxs == group)[0]
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]


def _torchvision_style_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms``, including its switch between the two strategies."""
    ops = torchvision_ops()
    if ops is not None:
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20000) and not torch.jit.is_tracing():
        return _batched_nms_per_group(boxes, scores, idxs, iou_threshold)
    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression applied independently within each group (e.g. class).

    Boxes are converted to float32 first (fp16 lacks the range for the coordinate
    offsets). Below 40000 boxes this is ``torchvision.ops.batched_nms``; from 40000 on,
    one :func:`nms` per group.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        scores: Tensor[N].
        idxs: int Tensor[N], the group of each box; boxes of different groups never
            suppress each other.
        iou_threshold: discard boxes whose IoU is strictly greater than this.

    Returns:
        int64 Tensor[K]: indices of the kept boxes sorted by decreasing score.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if len(boxes) < 40000:
        return _torchvision_style_batched_nms(boxes.float(), scores, idxs, iou_threshold)
    keep_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
    for group in torch.unique(idxs).cpu().tolist():
        members = (idxs == group).nonzero().view(-1)
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = keep_mask.nonzero().view(-1)
    return keep[scores[keep].argsort(descending=True)]
