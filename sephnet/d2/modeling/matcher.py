"""Threshold-based assignment of predictions (anchors, proposals) to ground-truth elements."""

from typing import List, Tuple

import torch

from sephnet.d2.layers import nonzero_tuple

__all__ = ["Matcher"]


class Matcher:
    """Match each of N predictions to at most one of M ground-truth elements.

    Given an (M, N) match-quality matrix (typically IoU), every prediction takes the gt it
    overlaps best, and gets a label from the interval its best quality falls in:
    ``thresholds`` split [0, inf) into len(thresholds) + 1 half-open intervals
    [-inf, t0), [t0, t1), ..., [t_last, inf), and ``labels`` gives one label per interval
    (-1 = ignore, 0 = negative, 1 = positive). Example: thresholds [0.3, 0.7], labels
    [0, -1, 1] is the RPN rule (IoU < 0.3 negative, 0.3 <= IoU < 0.7 ignored, >= 0.7 positive).

    Args:
        thresholds: increasing (non-strictly) list of positive thresholds.
        labels: len(thresholds) + 1 labels, each in {-1, 0, 1}.
        allow_low_quality_matches: also mark as positive, for every gt, all predictions whose
            quality equals that gt's best quality (ties included), even below the top threshold
            (Faster R-CNN's RPN rule (i)). Their matched index stays their own argmax gt.

    Raises:
        ValueError: for thresholds that are not positive and sorted, labels outside
            {-1, 0, 1}, or a label count that is not len(thresholds) + 1.
    """

    def __init__(
        self, thresholds: List[float], labels: List[int], allow_low_quality_matches: bool = False
    ):
        thresholds = list(thresholds)
        if len(thresholds) == 0 or not thresholds[0] > 0:
            raise ValueError(
                f"Matcher thresholds must be a non-empty list starting above 0, got {thresholds}"
            )
        if any(lo > hi for lo, hi in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(
                f"Matcher thresholds must be sorted in increasing order, got {thresholds}"
            )
        if any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher labels must each be -1, 0 or 1, got {list(labels)}")
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"Matcher needs len(thresholds) + 1 = {len(thresholds) + 1} labels, got {list(labels)}"
            )
        self.thresholds = [-float("inf")] + thresholds + [float("inf")]
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Assign gt indices and labels.

        Args:
            match_quality_matrix: (M, N) float tensor of non-negative qualities between M gt
                elements and N predictions.

        Returns:
            matches: (N,) int64, index in [0, M) of the best gt of each prediction (0 when M == 0).
            match_labels: (N,) int8 in {-1, 0, 1}. With M == 0 (or N == 0) every label is
                ``labels[0]`` (usually background).

        Raises:
            ValueError: if the matrix is not 2-D or holds a negative value.
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"Matcher expects an (M, N) matrix, got shape {tuple(match_quality_matrix.shape)}"
            )
        num_preds = match_quality_matrix.size(1)
        if match_quality_matrix.numel() == 0:
            matches = match_quality_matrix.new_full((num_preds,), 0, dtype=torch.int64)
            labels = match_quality_matrix.new_full((num_preds,), self.labels[0], dtype=torch.int8)
            return matches, labels
        if not bool((match_quality_matrix >= 0).all()):
            raise ValueError("Matcher: all match qualities must be >= 0")

        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            match_labels[(matched_vals >= low) & (matched_vals < high)] = label

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(match_labels, match_quality_matrix)
        return matches, match_labels

    def set_low_quality_matches_(
        self, match_labels: torch.Tensor, match_quality_matrix: torch.Tensor
    ) -> None:
        """In place: label 1 every prediction that attains some gt's maximum quality (ties included).

        A gt whose best quality is 0 (no overlap with any prediction) therefore makes every
        prediction with zero quality to it positive, exactly like detectron2.
        """
        best_per_gt = match_quality_matrix.max(dim=1).values
        _, pred_idx = nonzero_tuple(match_quality_matrix == best_per_gt[:, None])
        match_labels[pred_idx] = 1
