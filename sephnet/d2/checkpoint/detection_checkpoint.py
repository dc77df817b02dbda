"""``DetectionCheckpointer``: fvcore's ``Checkpointer`` that also reads detectron2 / Detectron
(Caffe2) / torchvision-converted / pycls weights and resolves ``detectron2://``,
``catalog://`` and http(s) paths.

Formats handled by :meth:`DetectionCheckpointer._load_file`:

- ``.pth`` (anything else): ``torch.load``; a bare state dict is wrapped as ``{"model": sd}``.
- ``.pkl`` with ``"model"`` and ``"__author__"`` keys: detectron2 model zoo / converted
  torchvision weights, returned as is (``"matching_heuristics": True`` in the file turns on
  name matching).
- other ``.pkl``: a Caffe2 / Detectron blob dict (``{"blobs": {...}}`` or ``{name: ndarray}``);
  ``*_momentum`` blobs are dropped, names are converted and matched.
- ``.pyth``: pycls checkpoints (``"model_state"``), matched by name.

Reliability additions over detectron2 v0.6 (same file format, same API):

- ``save`` writes ``<name>.pth`` and ``last_checkpoint`` atomically (temporary sibling, fsync,
  rename; see :mod:`.atomic_file`), so ``last_checkpoint`` only ever names a complete file, and
  refuses (``FloatingPointError``) to write model weights holding NaN or infinity.
- ``resume_or_load(resume=True)`` falls back to the newest readable ``*.pth`` of ``save_dir``
  when the file named by ``last_checkpoint`` is missing, truncated or corrupt, logging which
  file it used and why.
"""
import glob
import os
import pickle
from typing import Any, Dict, List, Optional, Tuple

import torch
from fvcore.common.checkpoint import Checkpointer, _IncompatibleKeys
from torch import nn

import sephnet.d2.utils.comm as comm
from sephnet.d2.checkpoint.atomic_file import TEMP_MARKER, atomic_write
from sephnet.d2.checkpoint.c2_model_loading import align_and_update_state_dicts
from sephnet.d2.utils.file_io import PathManager


class DetectionCheckpointer(Checkpointer):
    """Checkpointer for detection models.

    Compared with fvcore's ``Checkpointer`` it reads the legacy formats listed in the module
    docstring, applies name-matching heuristics where the file asks for them, and resolves
    paths through the core's ``PathManager``. ``load`` raises ``DownloadError`` (an
    ``OSError`` naming the URL) when a remote file cannot be fetched and ``ValueError`` naming
    the file when it is truncated or corrupt. (fvcore unwraps DDP models, so the model is
    never a DDP wrapper here; every worker must be able to read the file.)
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        **checkpointables: Any,
    ):
        """
        Args:
            model: the model (a DDP/DataParallel wrapper is unwrapped by fvcore).
            save_dir: where ``save`` writes and ``resume_or_load`` looks.
            save_to_disk: whether ``save`` writes; default: only on the main process.
            checkpointables: other objects with ``state_dict``/``load_state_dict`` (optimizer,
                scheduler, ...) saved and loaded with the model.
        """
        super().__init__(
            model,
            save_dir,
            save_to_disk=comm.is_main_process() if save_to_disk is None else save_to_disk,
            **checkpointables,
        )
        self.path_manager = PathManager

    def _local_save_dir(self) -> bool:
        return bool(self.save_dir) and os.path.isdir(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``; fvcore's format)
        and tag it in ``last_checkpoint``, both atomically when ``save_dir`` is a local folder.

        Raises:
            FloatingPointError: a floating-point model weight holds NaN or infinity; nothing is
                written and ``last_checkpoint`` keeps naming the previous (good) checkpoint.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        bad = [
            k for k, v in data["model"].items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
        ]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise FloatingPointError(
                f"Refusing to write {save_file}: model weights hold NaN or infinity ({shown}). "
                "The last good checkpoint is "
                f"{self.get_checkpoint_file() or 'none (none was written)'}."
            )
        if not self._local_save_dir():
            super().save(name, **kwargs)
            return
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Make ``<save_dir>/last_checkpoint`` name ``last_filename_basename`` (atomically for a
        local ``save_dir``)."""
        if not self._local_save_dir():
            super().tag_last_checkpoint(last_filename_basename)
            return
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode("utf-8")))

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """With ``resume`` and a ``last_checkpoint`` in ``save_dir``: load that checkpoint with all
        checkpointables, or, if it is missing or unreadable, the newest readable ``*.pth`` of
        ``save_dir`` (logged with the reason). Otherwise load only the model from ``path``.

        Returns:
            The checkpoint's extra data (see fvcore's ``Checkpointer.load``).

        Raises:
            ValueError: resuming, but no ``*.pth`` in ``save_dir`` is readable; the message names
                each file tried and why it failed.
        """
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        self._remove_stale_temporaries()
        named = self.get_checkpoint_file()
        failures: List[Tuple[str, str]] = []
        for candidate in self._resume_candidates(named):
            if not os.path.isfile(candidate):
                failures.append((candidate, "the file does not exist"))
                continue
            try:
                extra = self.load(candidate)
            except ValueError as e:
                failures.append((candidate, str(e)))
                continue
            if failures:
                reasons = "; ".join(f"{f}: {why}" for f, why in failures)
                self.logger.warning(
                    f"Resumed from {candidate}, the newest readable checkpoint in {self.save_dir}, "
                    f"because last_checkpoint's {named or '(empty)'} could not be used ({reasons})."
                )
            return extra
        reasons = "\n".join(f"  {f}: {why}" for f, why in failures)
        raise ValueError(
            f"Cannot resume from {self.save_dir}: no checkpoint there is readable.\n{reasons}\n"
            "Remove the broken files (or last_checkpoint) to start from MODEL.WEIGHTS instead."
        )

    def _resume_candidates(self, named: str) -> List[str]:
        """``named`` first, then the other ``*.pth`` of ``save_dir``, newest modification first."""
        others = [f for f in glob.glob(os.path.join(self.save_dir, "*.pth")) if f != named]
        others.sort(key=lambda f: (os.path.getmtime(f), f), reverse=True)
        return ([named] if named else []) + others

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files left by saves that were killed (main process only)."""
        if not self.save_to_disk or not self._local_save_dir():
            return
        for tmp in glob.glob(os.path.join(self.save_dir, f"*{TEMP_MARKER}*")):
            self.logger.info(f"Removing {tmp}, left by a save that did not finish.")
            os.remove(tmp)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """Read a local checkpoint file into ``{"model": state_dict, ...}``.

        Raises:
            ValueError: naming the file, if it cannot be unpickled (truncated / corrupt) or has
                an unexpected structure.
        """
        if filename.endswith(".pkl"):
            data = self._read_pickle(filename)
            if not isinstance(data, dict):
                raise ValueError(
                    f"Cannot load {filename}: expected a pickled dict, got {type(data).__name__}"
                )
            if "model" in data and "__author__" in data:
                self.logger.info(f"Reading a file from '{data['__author__']}'")
                return data
            # Caffe2 / Detectron: detection models nest blobs under "blobs", ImageNet ones don't
            blobs = data["blobs"] if "blobs" in data else data
            blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):
            data = self._torch_load(filename)
            if not isinstance(data, dict) or "model_state" not in data:
                raise ValueError(
                    f"Cannot load .pyth file {filename}; pycls checkpoints must contain 'model_state'."
                )
            state = {
                k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}

        loaded = self._torch_load(filename)
        if not isinstance(loaded, dict):
            raise ValueError(
                f"Cannot load {filename}: expected a checkpoint dict or state dict, got "
                f"{type(loaded).__name__}"
            )
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _read_pickle(self, filename: str) -> Any:
        """Unpickle a ``.pkl`` file (latin1, for Python 2 Caffe2 pickles)."""
        try:
            with self.path_manager.open(filename, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                ImportError, IndexError) as e:
            raise ValueError(
                f"Cannot read checkpoint {filename}: {type(e).__name__}: {e}. The file is "
                "truncated, corrupt or not a pickle."
            ) from e

    def _torch_load(self, filename: str) -> Any:
        """``torch.load`` to the CPU, with a clear error for unreadable files.

        Tries the safe ``weights_only`` loader first; detectron2 checkpoints written by older
        torch versions may pickle other Python objects, so if that loader refuses the file it is
        loaded again with the full unpickler (as detectron2 v0.6 always did), with a warning.
        """
        try:
            try:
                return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
            except pickle.UnpicklingError as e:
                # Only a refused (non-allowlisted) global means "other objects"; any other
                # weights-only failure (e.g. "Unsupported operand") is a corrupt file.
                if "Unsupported global" not in str(e) and "add_safe_globals" not in str(e):
                    raise
                self.logger.warning(
                    f"{filename} holds objects other than tensors and containers; loading it with "
                    "the full unpickler. Only load checkpoints you trust."
                )
                return torch.load(filename, map_location=torch.device("cpu"), weights_only=False)
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, AttributeError,
                ImportError, IndexError) as e:
            # torch's weights-only message is a page long; its last part says what failed
            reason = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
            raise ValueError(
                f"Cannot read checkpoint {filename}: {type(e).__name__}: {reason}. The file is "
                "truncated, corrupt or not a torch checkpoint."
            ) from e

    def _load_model(self, checkpoint: Dict[str, Any]) -> _IncompatibleKeys:
        """Load ``checkpoint["model"]`` into the model, renaming keys first when the checkpoint
        has ``matching_heuristics`` (Caffe2 names are converted when ``__author__ == "Caffe2"``).

        Missing ``pixel_mean``/``pixel_std`` buffers (filled from the config) and unexpected
        ``anchor_generator.cell_anchors`` keys (persistent in old checkpoints only) are not
        reported.
        """
        if checkpoint.get("matching_heuristics", False):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(),
                checkpoint["model"],
                c2_conversion=checkpoint.get("__author__", None) == "Caffe2",
            )
        incompatible = super()._load_model(checkpoint)

        own_buffers = dict(self.model.named_buffers(recurse=False))
        for name in ("pixel_mean", "pixel_std"):
            if name in own_buffers and name in incompatible.missing_keys:
                incompatible.missing_keys.remove(name)
        stale: List[str] = [k for k in incompatible.unexpected_keys if "anchor_generator.cell_anchors" in k]
        for k in stale:
            incompatible.unexpected_keys.remove(k)
        return incompatible
