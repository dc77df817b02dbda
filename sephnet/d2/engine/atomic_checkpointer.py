"""A :class:`DetectionCheckpointer` whose files are never seen half-written (core addition).

:class:`DefaultTrainer` checkpoints through it. Each file (``<name>.pth`` and the
``last_checkpoint`` tag) is written to a temporary sibling, flushed to disk and renamed
over the target, so a run killed while saving leaves the previous complete checkpoint
and a ``last_checkpoint`` that names a complete file. Everything else, including the
file contents, is :class:`DetectionCheckpointer`'s.
"""
import os
from typing import IO, Any, Callable

import torch

from sephnet.d2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicDetectionCheckpointer"]


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path``.

    The temporary file is removed if ``write`` raises.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
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


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with atomic ``save`` and ``tag_last_checkpoint``
    (for local ``save_dir``s; other paths fall back to the plain writes)."""

    def _local_save_dir(self) -> bool:
        return bool(self.save_dir) and os.path.isdir(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``) atomically
        and tag it as the last checkpoint."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._local_save_dir():
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically make ``<save_dir>/last_checkpoint`` name ``last_filename_basename``."""
        if not self._local_save_dir():
            super().tag_last_checkpoint(last_filename_basename)
            return
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode("utf-8")))
