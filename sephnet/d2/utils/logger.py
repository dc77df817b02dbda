"""Logging set-up (``setup_logger``) and rate-limited logging helpers.

detectron2's modules log under the ``"detectron2"`` logger tree; the core's modules log
under ``"sephnet.d2"``. So that ``setup_logger()`` captures the same lines as with
detectron2, setting up the ``"detectron2"`` logger also sets up ``"sephnet.d2"`` with the
same handlers, and both abbreviate to ``d2`` in the terminal (``[d2.utils.events]``).
"""

import atexit
import functools
import logging
import os
import sys
import time
from collections import Counter
from typing import Any, Dict, IO, Optional, Tuple, Union

from tabulate import tabulate
from termcolor import colored

from sephnet.d2.utils.file_io import PathManager

__all__ = [
    "setup_logger",
    "log_first_n",
    "log_every_n",
    "log_every_n_seconds",
    "create_small_table",
]

_CORE_ROOT = "sephnet.d2"


class _ColorfulFormatter(logging.Formatter):
    """Terminal formatter: shortens the logger name's root and flags warnings/errors in red."""

    def __init__(self, *args: Any, root_name: str, abbrev_name: str = "", **kwargs: Any):
        self._root_name = root_name + "."
        self._abbrev_name = abbrev_name + "." if abbrev_name else ""
        super().__init__(*args, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.name = record.name.replace(self._root_name, self._abbrev_name)
        text = super().formatMessage(record)
        if record.levelno == logging.WARNING:
            return colored("WARNING", "red", attrs=["blink"]) + " " + text
        if record.levelno >= logging.ERROR:
            return colored("ERROR", "red", attrs=["blink", "underline"]) + " " + text
        return text


@functools.lru_cache()  # repeated calls must not stack up duplicate handlers
def setup_logger(
    output: Optional[str] = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "detectron2",
    abbrev_name: Optional[str] = None,
) -> logging.Logger:
    """Configure logger ``name`` at DEBUG level: stdout on rank 0, a file on every rank.

    Args:
        output: a ``.txt``/``.log`` file name, or a directory (then ``<output>/log.txt``);
            ``None`` writes no file. Ranks > 0 write ``<file>.rank<N>``.
        distributed_rank: this process's rank; only rank 0 logs to stdout.
        color: colour the terminal output.
        name: root logger name to configure. ``"detectron2"`` also configures the core's
            ``"sephnet.d2"`` logger tree.
        abbrev_name: how the root name is shown on the terminal; default ``"d2"`` for
            ``"detectron2"``, otherwise ``name``; ``""`` hides it.

    Returns:
        The logger ``name``.
    """
    if abbrev_name is None:
        abbrev_name = "d2" if name == "detectron2" else name
    roots = [name, _CORE_ROOT] if name == "detectron2" else [name]

    plain = logging.Formatter(
        "[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S"
    )
    log_file = None
    if output is not None:
        log_file = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            log_file = f"{log_file}.rank{distributed_rank}"
        PathManager.mkdirs(os.path.dirname(log_file))

    for root in roots:
        logger = logging.getLogger(root)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        if distributed_rank == 0:
            console = logging.StreamHandler(stream=sys.stdout)
            console.setLevel(logging.DEBUG)
            if color:
                console.setFormatter(
                    _ColorfulFormatter(
                        colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s",
                        datefmt="%m/%d %H:%M:%S",
                        root_name=root,
                        abbrev_name=str(abbrev_name),
                    )
                )
            else:
                console.setFormatter(plain)
            logger.addHandler(console)
        if log_file is not None:
            file_handler = logging.StreamHandler(_cached_log_stream(log_file))
            file_handler.setLevel(logging.DEBUG)
            file_handler.setFormatter(plain)
            logger.addHandler(file_handler)
    return logging.getLogger(name)


@functools.lru_cache(maxsize=None)
def _cached_log_stream(filename: str) -> IO[str]:
    """One append stream per file, shared by every handler that writes there."""
    stream = PathManager.open(filename, "a", buffering=1024 if "://" in filename else -1)
    atexit.register(stream.close)
    return stream


def _find_caller() -> Tuple[str, Tuple[str, int, str]]:
    """Return the module name and (file, line, function) of the first frame outside this file."""
    frame = sys._getframe(2)
    here = os.path.normcase(os.path.abspath(__file__))
    while frame:
        code = frame.f_code
        if os.path.normcase(os.path.abspath(code.co_filename)) != here:
            module = frame.f_globals.get("__name__", "detectron2")
            if module == "__main__":
                module = "detectron2"
            return module, (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return "detectron2", ("", 0, "")


_LOG_COUNTER: Counter = Counter()
_LOG_TIMER: Dict[Tuple, float] = {}


def log_first_n(
    lvl: int,
    msg: str,
    n: int = 1,
    *,
    name: Optional[str] = None,
    key: Union[str, Tuple[str, ...]] = "caller",
) -> None:
    """Log ``msg`` only the first ``n`` times.

    Args:
        lvl: logging level.
        n: how many times to log.
        name: logger name; default: the caller's module.
        key: what counts as "the same log": ``"caller"`` (same call site),
            ``"message"`` (same text from anywhere) or both as a tuple.

    Raises:
        ValueError: ``key`` is empty or names something other than caller/message.
    """
    keys = (key,) if isinstance(key, str) else tuple(key)
    if not keys or not set(keys) <= {"caller", "message"}:
        raise ValueError(f"log_first_n: key must be 'caller', 'message' or both, got {key!r}.")
    module, call_site = _find_caller()
    hash_key: Tuple = ()
    if "caller" in keys:
        hash_key += call_site
    if "message" in keys:
        hash_key += (msg,)
    _LOG_COUNTER[hash_key] += 1
    if _LOG_COUNTER[hash_key] <= n:
        logging.getLogger(name or module).log(lvl, msg)


def log_every_n(lvl: int, msg: str, n: int = 1, *, name: Optional[str] = None) -> None:
    """Log ``msg`` on the 1st, (n+1)-th, (2n+1)-th ... call from the same call site."""
    module, call_site = _find_caller()
    _LOG_COUNTER[call_site] += 1
    if n == 1 or _LOG_COUNTER[call_site] % n == 1:
        logging.getLogger(name or module).log(lvl, msg)


def log_every_n_seconds(lvl: int, msg: str, n: float = 1, *, name: Optional[str] = None) -> None:
    """Log ``msg`` at most once every ``n`` seconds from the same call site."""
    module, call_site = _find_caller()
    now = time.time()
    last = _LOG_TIMER.get(call_site)
    if last is None or now - last >= n:
        logging.getLogger(name or module).log(lvl, msg)
        _LOG_TIMER[call_site] = now


def create_small_table(small_dict: Dict[str, Any]) -> str:
    """Format a small dict as a one-row markdown ("pipe") table, keys as headers.

    Floats are printed with 3 decimals, everything centred (detectron2's result tables).
    """
    keys, values = tuple(zip(*small_dict.items()))
    return tabulate(
        [values],
        headers=keys,
        tablefmt="pipe",
        floatfmt=".3f",
        stralign="center",
        numalign="center",
    )
