"""Training metrics: the ``EventStorage`` that code writes into, and writers that read it.

Training code calls ``get_event_storage().put_scalar("loss_cls", v)``; every iteration the
trainer's writers turn the stored values into a log line (:class:`CommonMetricPrinter`),
a line of ``metrics.json`` (:class:`JSONWriter`) and tensorboard events
(:class:`TensorboardXWriter`). Storages form a stack: ``with EventStorage(...)`` makes one
current for its block.
"""

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from fvcore.common.history_buffer import HistoryBuffer

from sephnet.d2.utils.file_io import PathManager

__all__ = [
    "get_event_storage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "CommonMetricPrinter",
    "EventStorage",
]

_CURRENT_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """Return the innermost active :class:`EventStorage`.

    Raises:
        RuntimeError: no storage is active (call this inside ``with EventStorage(...):``).
            It is also an ``AssertionError``, which detectron2 raises here.
    """
    if not _CURRENT_STORAGE_STACK:
        raise _NoEventStorageError(
            "get_event_storage() is only valid inside a 'with EventStorage(...):' block."
        )
    return _CURRENT_STORAGE_STACK[-1]


class _NoEventStorageError(RuntimeError, AssertionError):
    """Raised by :func:`get_event_storage` outside any storage context."""


class EventWriter:
    """Base class of the writers: ``write()`` reads the current storage and emits it."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration to a file (detectron2's ``metrics.json``).

    Each line holds ``"iteration"`` and every scalar last put at that iteration (smoothed by
    a median over ``window_size`` when its smoothing hint is true), with sorted keys::

        {"data_time": 0.01, "iteration": 19, "loss_cls": 0.53, "lr": 0.0071, ...}

    Scalars already written are not repeated.
    """

    def __init__(self, json_file: str, window_size: int = 20):
        """
        Args:
            json_file: output path; appended to when it already exists.
            window_size: median window for scalars whose smoothing hint is true.
        """
        self._file_handle = PathManager.open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        per_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                per_iter[itr][name] = value
        if per_iter:
            self._last_write = max(per_iter)
        for itr, scalars in per_iter.items():
            scalars["iteration"] = itr
            self._file_handle.write(json.dumps(scalars, sort_keys=True) + "\n")
        self._file_handle.flush()
        try:
            os.fsync(self._file_handle.fileno())
        except (AttributeError, OSError):  # not every PathManager stream has a real fd
            pass

    def close(self) -> None:
        self._file_handle.close()


class TensorboardXWriter(EventWriter):
    """Writes scalars (median-smoothed per their hint), images and histograms to tensorboard."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any):
        """
        Args:
            log_dir: directory for the events files.
            window_size: median window for scalars whose smoothing hint is true.
            kwargs: passed on to ``torch.utils.tensorboard.SummaryWriter``.
        """
        self._window_size = window_size
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir, **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        newest = self._last_write
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(name, value, itr)
                newest = max(newest, itr)
        self._last_write = newest

        # Images and histograms are held by the storage until one writer consumes them;
        # this writer is that consumer, so it clears them after writing.
        if storage._vis_data:
            for img_name, img, step in storage._vis_data:
                self._writer.add_image(img_name, img, step)
            storage.clear_images()
        if storage._histograms:
            for params in storage._histograms:
                self._writer.add_histogram_raw(**params)
            storage.clear_histograms()

    def close(self) -> None:
        if hasattr(self, "_writer"):  # absent when tensorboard failed to import
            self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Logs one progress line per call, in detectron2's exact format (one line, shown
    wrapped here; note the leading space and the two-space separators)::

        " eta: 0:10:02  iter: 19  total_loss: 1.9  loss_cls: 0.53  time: 0.2540  "
        "data_time: 0.0084  lr: 0.0071  max_mem: 2563M"

    Losses (every scalar whose name contains "loss") are medians over ``window_size``;
    ``time`` is the global mean of the "time" scalar, ``data_time`` the mean of its last 20
    values, ``lr`` the latest "lr". Parts whose scalar is missing are left out; ``max_mem``
    appears only when CUDA is available; ``eta`` only when ``max_iter`` is given. Log
    parsers rely on this format, so it must not change. Nothing is logged at
    ``iter == max_iter``.
    """

    def __init__(self, max_iter: Optional[int] = None, window_size: int = 20):
        """
        Args:
            max_iter: total training iterations, used for the ETA; ``None`` hides it.
            window_size: median window for the losses.
        """
        self.logger = logging.getLogger(__name__)
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: Optional[Tuple[int, float]] = None  # (iter, perf_counter) for ETA

    def _get_eta(self, storage: "EventStorage") -> Optional[str]:
        if self._max_iter is None:
            return ""
        iteration = storage.iter
        remaining = self._max_iter - iteration - 1
        try:
            eta_seconds = storage.history("time").median(1000) * remaining
        except KeyError:
            # No "time" scalar (e.g. not driven by SimpleTrainer): estimate from the wall
            # clock between successive calls, which is noisier.
            eta = None
            if self._last_write is not None:
                per_iter = (time.perf_counter() - self._last_write[1]) / (
                    iteration - self._last_write[0]
                )
                eta = str(datetime.timedelta(seconds=int(per_iter * remaining)))
            self._last_write = (iteration, time.perf_counter())
            return eta
        storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
        return str(datetime.timedelta(seconds=int(eta_seconds)))

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter:
            # Training has finished; this printer reports progress only.
            return

        def optional(fmt: str, name: str, reduce: str, *args: Any) -> str:
            try:
                return fmt.format(getattr(storage.history(name), reduce)(*args))
            except KeyError:
                return ""

        time_part = optional("time: {:.4f}  ", "time", "global_avg")
        data_time_part = optional("data_time: {:.4f}  ", "data_time", "avg", 20)
        lr = optional("{:.5g}", "lr", "latest") or "N/A"
        eta = self._get_eta(storage)
        losses = "  ".join(
            f"{name}: {buf.median(self._window_size):.4g}"
            for name, buf in storage.histories().items()
            if "loss" in name
        )
        memory = ""
        if torch.cuda.is_available():
            memory = "max_mem: {:.0f}M".format(torch.cuda.max_memory_allocated() / 1024.0 / 1024.0)
        eta_part = f"eta: {eta}  " if eta else ""
        self.logger.info(
            f" {eta_part}iter: {iteration}  {losses}  {time_part}{data_time_part}lr: {lr}  {memory}"
        )


class EventStorage:
    """Holds the scalars, images and histograms produced during training.

    Scalars are kept per name in an fvcore ``HistoryBuffer`` of ``(value, iteration)``;
    each name also has a smoothing hint that writers may follow. Use it as a context
    manager to make it the storage returned by :func:`get_event_storage`.
    """

    def __init__(self, start_iter: int = 0):
        """
        Args:
            start_iter: the iteration number new data is recorded at until ``step()`` or
                ``iter = ...`` changes it.
        """
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest_scalars: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self._current_prefix = ""
        self._vis_data: List[Tuple[str, Any, int]] = []
        self._histograms: List[Dict[str, Any]] = []

    def put_image(self, img_name: str, img_tensor: Any) -> None:
        """Queue an image for tensorboard at the current iteration.

        Args:
            img_name: tag of the image.
            img_tensor: RGB ``[3, H, W]`` tensor or array, float in [0, 1] or uint8 in
                [0, 255].
        """
        self._vis_data.append((img_name, img_tensor, self._iter))

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True) -> None:
        """Record ``float(value)`` under ``name`` (with the current name scope prefix).

        Args:
            smoothing_hint: whether writers should smooth this (noisy) scalar. A name keeps
                the hint it was first put with.

        Raises:
            ValueError: ``name`` was put before with a different smoothing hint (also an
                ``AssertionError``, as in detectron2).
        """
        name = self._current_prefix + name
        value = float(value)
        self._history[name].update(value, self._iter)
        self._latest_scalars[name] = (value, self._iter)
        previous = self._smoothing_hints.setdefault(name, smoothing_hint)
        if previous != smoothing_hint:
            raise _SmoothingHintMismatch(
                f"Scalar {name} was put with a different smoothing_hint! "
                f"First {previous}, now {smoothing_hint}."
            )

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs: Any) -> None:
        """Record several scalars: ``storage.put_scalars(loss=l, accuracy=a)``."""
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint)

    def put_histogram(self, hist_name: str, hist_tensor: torch.Tensor, bins: int = 1000) -> None:
        """Queue a histogram of ``hist_tensor``'s values for tensorboard.

        Args:
            hist_name: tag of the histogram.
            hist_tensor: tensor of any shape.
            bins: number of equal-width bins between its min and max.
        """
        lo, hi = hist_tensor.min().item(), hist_tensor.max().item()
        counts = torch.histc(hist_tensor, bins=bins)
        edges = torch.linspace(start=lo, end=hi, steps=bins + 1, dtype=torch.float32)
        self._histograms.append(
            dict(
                tag=hist_name,
                min=lo,
                max=hi,
                num=len(hist_tensor),
                sum=float(hist_tensor.sum()),
                sum_squares=float(torch.sum(hist_tensor**2)),
                bucket_limits=edges[1:].tolist(),
                bucket_counts=counts.tolist(),
                global_step=self._iter,
            )
        )

    def history(self, name: str) -> HistoryBuffer:
        """Return the history of scalar ``name``; ``KeyError`` if it was never put."""
        buf = self._history.get(name)
        if buf is None:
            raise KeyError(f"No history metric available for {name}!")
        return buf

    def histories(self) -> Dict[str, HistoryBuffer]:
        """Return ``{name: HistoryBuffer}`` for every scalar."""
        return self._history

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """Return ``{name: (latest value, iteration it was put at)}``."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like :meth:`latest`, but scalars with a true smoothing hint give the median of
        their last ``window_size`` values instead of the latest one."""
        return {
            name: (
                self._history[name].median(window_size) if self._smoothing_hints[name] else value,
                itr,
            )
            for name, (value, itr) in self._latest_scalars.items()
        }

    def smoothing_hints(self) -> Dict[str, bool]:
        """Return ``{name: smoothing hint}``."""
        return self._smoothing_hints

    def step(self) -> None:
        """Advance the iteration counter by one (or assign ``storage.iter`` instead)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        """The current iteration; a trainer keeps it equal to ``trainer.iter``."""
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    @property
    def iteration(self) -> int:
        """Alias of :attr:`iter` (older name)."""
        return self._iter

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if not _CURRENT_STORAGE_STACK or _CURRENT_STORAGE_STACK[-1] is not self:
            raise RuntimeError("EventStorage contexts were exited out of order.")
        _CURRENT_STORAGE_STACK.pop()

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Within the block, prefix every scalar name with ``name + "/"``."""
        old_prefix = self._current_prefix
        self._current_prefix = name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def clear_images(self) -> None:
        """Drop queued images (a writer calls this after consuming them)."""
        self._vis_data = []

    def clear_histograms(self) -> None:
        """Drop queued histograms (a writer calls this after consuming them)."""
        self._histograms = []


class _SmoothingHintMismatch(ValueError, AssertionError):
    """A scalar was put again with a different smoothing hint."""
