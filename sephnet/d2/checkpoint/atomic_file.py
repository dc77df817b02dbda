"""Write a local file so that readers only ever see the old contents or the complete new ones
(core addition over detectron2 v0.6).

Used by :class:`~sephnet.d2.checkpoint.DetectionCheckpointer` for ``<name>.pth`` and the
``last_checkpoint`` tag: a run killed while saving leaves the previous complete file.
"""
import os
from typing import IO, Any, Callable

__all__ = ["atomic_write", "TEMP_MARKER"]

#: Infix of the temporary siblings (``<path>.tmp-<pid>``); never ends in ``.pth``.
TEMP_MARKER = ".tmp-"


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary sibling of ``path``, flush and fsync it, then rename
    it over ``path`` (and fsync the folder so the rename itself survives a crash).

    The temporary file is removed if ``write`` raises; a process killed outright leaves
    only ``<path>.tmp-<pid>``, never a partial ``path``.
    """
    tmp = f"{path}{TEMP_MARKER}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _fsync_dir(folder: str) -> None:
    """Flush a folder's entries to disk (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
