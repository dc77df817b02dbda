"""A live progress line for training in a terminal.

detectron2 logs one line every 20 iterations (``CommonMetricPrinter``: ``eta: ... iter:
... total_loss: ...``); those lines stay unchanged and keep going to ``log.txt``. When
standard output is a terminal, :class:`TerminalProgress` also keeps one line at the
bottom of the screen up to date after every step (at most a few times per second)::

    iter 340/1000 [#######.............]  34%  eta 0:03:12  0.29 s/it  total_loss 0.812  lr 0.02

Log records that reach the same terminal are printed above it: the line is wiped before
each record and redrawn at the next step. When standard output is not a terminal (a
file, a pipe, CI), the hook does nothing, so logs hold only detectron2-format lines.
"""
import datetime
import logging
import shutil
import sys
import time
from typing import IO, List, Optional, Tuple

from sephnet.backend import HookBase

__all__ = ["TerminalProgress", "format_progress"]

_BAR_WIDTH = 20
_CLEAR_LINE = "\r\033[K"  # carriage return + ANSI "erase to end of line"


def format_progress(
    iteration: int,
    max_iter: int,
    eta_seconds: Optional[float] = None,
    seconds_per_iter: Optional[float] = None,
    scalars: Tuple[Tuple[str, float], ...] = (),
    width: int = 120,
) -> str:
    """One progress line, at most ``width`` characters.

    Args:
        iteration: the iteration just finished (0-based), so ``iteration + 1`` are done.
        max_iter: total iterations of the run.
        eta_seconds: remaining time; ``None`` omits it.
        seconds_per_iter: step time; ``None`` omits it.
        scalars: (name, value) pairs shown at the end, in order (e.g. loss, lr).
        width: the terminal width; the line is cut to fit.

    Returns:
        e.g. ``"iter 340/1000 [#######.............]  34%  eta 0:03:12  0.29 s/it
        total_loss 0.812"`` (one line).
    """
    done = min(iteration + 1, max_iter)
    fraction = done / max_iter if max_iter > 0 else 1.0
    filled = int(round(fraction * _BAR_WIDTH))
    parts = [
        f"iter {done}/{max_iter} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] "
        f"{fraction * 100:3.0f}%"
    ]
    if eta_seconds is not None:
        parts.append(f"eta {datetime.timedelta(seconds=int(eta_seconds))}")
    if seconds_per_iter is not None:
        parts.append(f"{seconds_per_iter:.2f} s/it")
    parts.extend(f"{name} {value:.4g}" for name, value in scalars)
    return "  ".join(parts)[: max(width, 1)]


class _WipeBeforeRecord(logging.Filter):
    """Wipes the progress line before a log record is printed to the same terminal."""

    def __init__(self, progress: "TerminalProgress"):
        super().__init__()
        self._progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self._progress.wipe()
        return True


class TerminalProgress(HookBase):
    """Redraws a one-line progress display after training steps when ``stream`` is a TTY.

    Register it on the main process only (after :class:`IterationTimer`, whose ``time``
    scalar gives the step time and ETA). It shows the iteration, a bar, the percentage,
    the ETA (median step time of the last 100 steps × remaining steps), the step time, the
    median ``total_loss`` of the last 20 steps and the current ``lr``.
    """

    def __init__(self, stream: Optional[IO[str]] = None, refresh_seconds: float = 0.25):
        """
        Args:
            stream: where to draw; default ``sys.stdout`` (looked up at ``before_train``).
            refresh_seconds: minimum time between redraws (the last step is always drawn).
        """
        self._stream_arg = stream
        self._stream: Optional[IO[str]] = None
        self._refresh = refresh_seconds
        self._last_draw = float("-inf")
        self._shown = False  # a progress line is on screen
        self._filtered: List[logging.Handler] = []
        self._filter = _WipeBeforeRecord(self)

    @property
    def enabled(self) -> bool:
        """Whether the line is drawn (the stream is a terminal); known after ``before_train``."""
        return self._stream is not None

    def before_train(self) -> None:
        stream = self._stream_arg if self._stream_arg is not None else sys.stdout
        isatty = getattr(stream, "isatty", None)
        if not (isatty and isatty()):
            return
        self._stream = stream
        for handler in _handlers_writing_to(stream):
            handler.addFilter(self._filter)
            self._filtered.append(handler)

    def after_step(self) -> None:
        if self._stream is None:
            return
        now = time.perf_counter()
        last_step = self.trainer.iter + 1 >= self.trainer.max_iter
        if now - self._last_draw < self._refresh and not last_step:
            return
        self._last_draw = now
        self._draw(self._line())

    def after_train(self) -> None:
        if self._stream is None:
            return
        if self._shown:
            self._stream.write("\n")  # keep the final state on screen
            self._stream.flush()
            self._shown = False
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        self._filtered.clear()
        self._stream = None

    def wipe(self) -> None:
        """Erase the progress line (it is redrawn at the next step)."""
        if self._stream is not None and self._shown:
            self._stream.write(_CLEAR_LINE)
            self._stream.flush()
            self._shown = False

    def _line(self) -> str:
        storage = self.trainer.storage
        iteration, max_iter = self.trainer.iter, self.trainer.max_iter
        seconds_per_iter = eta = None
        histories = storage.histories()
        if "time" in histories:
            seconds_per_iter = histories["time"].median(100)
            eta = seconds_per_iter * max(max_iter - iteration - 1, 0)
        scalars = []
        if "total_loss" in histories:
            scalars.append(("total_loss", histories["total_loss"].median(20)))
        if "lr" in histories:
            scalars.append(("lr", histories["lr"].latest()))
        width = shutil.get_terminal_size(fallback=(120, 24)).columns - 1
        return format_progress(iteration, max_iter, eta, seconds_per_iter, tuple(scalars), width)

    def _draw(self, line: str) -> None:
        self._stream.write(_CLEAR_LINE + line)
        self._stream.flush()
        self._shown = True


def _handlers_writing_to(stream: IO[str]) -> List[logging.Handler]:
    """Every logging ``StreamHandler`` (of any logger) whose stream is ``stream``."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    return [
        handler
        for logger in loggers
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
