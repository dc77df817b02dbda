"""One-line errors for the files a run reads: ``MODEL.WEIGHTS``, ``--config-file``, dataset json.

The checks run in sephnet's own setup (``train_net.py``), before either backend's loaders see
a file, so a wrong file gives the same message on real detectron2 and on the core: the key or
flag, the path and what is wrong, instead of an error from deep inside torch's unpickler,
yaml or pycocotools. Every error is an :class:`InputFileError` (a ``ValueError``).
"""
import json
import os
import pickle
import zipfile
from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np
import torch
import yaml

__all__ = [
    "InputFileError",
    "check_config_file",
    "check_dataset_json",
    "check_weights_file",
    "check_weights_fit_model",
    "guard_dataset_json",
]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # the first byte of a pickle of protocol 2 or later
_COCO_KEYS = ("images", "annotations", "categories")


class InputFileError(ValueError):
    """A file given by the user cannot be used; the message names the key, the path and why."""


def _existing_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise InputFileError(f"{what}={path!r}: no such file.")
    if os.path.isdir(path):
        raise InputFileError(f"{what}={path!r} is a directory, not a file.")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{what}={path!r} is empty (0 bytes).")


def _is_remote(path: str) -> bool:
    return "://" in path


def _read_checkpoint(path: str, what: str) -> Any:
    """The unpickled object of a torch zip checkpoint or a plain pickle (``.pkl``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise InputFileError(
                f"{what}={path!r} is truncated: a PyTorch (zip) checkpoint without its end record "
                f"({os.path.getsize(path)} bytes); copy or download it again."
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as e:
            raise InputFileError(
                f"{what}={path!r} is a damaged PyTorch checkpoint ({type(e).__name__}: {e})."
            ) from e
    if head[:1] != bytes([_PICKLE_PROTO]):
        raise InputFileError(
            f"{what}={path!r} is not a checkpoint: neither a PyTorch (zip) file nor a pickle "
            f"(it starts with {head!r})."
        )
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError) as e:
        raise InputFileError(
            f"{what}={path!r} is a truncated or damaged pickle ({type(e).__name__}: {e})."
        ) from e
    except Exception:  # a legacy (non-zip) torch.save file: tensors need torch's unpickler
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise InputFileError(
                f"{what}={path!r} is a pickle that neither pickle nor torch.load can read "
                f"({type(e).__name__}: {e})."
            ) from e


def _state_dict(obj: Any) -> Optional[Mapping[str, Any]]:
    """The weights of a loaded checkpoint: ``obj["model"]``, Detectron's ``obj["blobs"]``,
    pycls's ``obj["model_state"]`` or ``obj`` itself; None if it holds no array."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("model", "blobs", "model_state"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if any(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values()):
        return obj
    return None


def check_weights_file(path: str, what: str = "MODEL.WEIGHTS") -> Optional[Mapping[str, Any]]:
    """Check that ``path`` is a readable checkpoint holding weights.

    Returns:
        its state dict (names -> tensors/arrays), or None for "" and remote paths (``scheme://``,
        fetched by the backend's ``PathManager``).

    Raises:
        InputFileError: missing, a directory, empty, truncated, not a zip or pickle, or an
            object without weights.
    """
    if not path or _is_remote(path):
        return None
    _existing_file(path, what)
    obj = _read_checkpoint(path, what)
    state = _state_dict(obj)
    if state is None:
        found = type(obj).__name__
        if isinstance(obj, Mapping):
            found = f"a dict with keys {sorted(map(str, obj))[:8]} and no tensors"
        raise InputFileError(
            f"{what}={path!r} holds {found}, not model weights (a state dict, or a dict with "
            "'model')."
        )
    return state


def check_weights_fit_model(
    state: Mapping[str, Any], model: torch.nn.Module, path: str, what: str = "MODEL.WEIGHTS",
    require_all: bool = False,
) -> None:
    """Refuse a checkpoint of another architecture.

    Detectron-format pickles (``.pkl``) are skipped: the backends rename their blobs. A
    checkpoint that gives this model no tensor (no name with the same shape) is refused; with
    ``require_all`` (evaluation), so is one that leaves any model parameter without a value.

    Raises:
        InputFileError: naming the path and the first mismatching keys.
    """
    if path.endswith(".pkl") or "__author__" in state:
        return
    model = getattr(model, "module", model)  # DistributedDataParallel
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    fitting = [k for k, s in ours.items() if theirs.get(k) == s]
    missing = [k for k in ours if k not in theirs]
    wrong = [f"{k} {theirs[k]} vs {s}" for k, s in ours.items() if k in theirs and theirs[k] != s]
    if fitting and not (require_all and (missing or wrong)):
        return
    parts = []
    if missing:
        parts.append(f"missing {_first(missing)}")
    if wrong:
        parts.append(f"shape (checkpoint vs model) {_first(wrong)}")
    unexpected = [k for k in theirs if k not in ours]
    if unexpected:
        parts.append(f"not in the model {_first(unexpected)}")
    verdict = "fits none of this model's weights" if not fitting else "does not give every weight of the model"
    raise InputFileError(
        f"{what}={path!r} {verdict}: it is a checkpoint of another architecture ({'; '.join(parts)})."
    )


def _first(keys: Iterable[str], n: int = 3) -> str:
    keys = list(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_config_file(path: str, what: str = "--config-file") -> None:
    """Check that ``path`` is a YAML file holding a mapping of config keys.

    Raises:
        InputFileError: missing, a directory, empty, not YAML, or YAML that is not a mapping.
    """
    _existing_file(path, what)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.constructor.ConstructorError:
        return  # python tags: valid YAML that only the backend's (unsafe) loader builds
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or type(e).__name__
        raise InputFileError(f"{what} {path!r} is not valid YAML{where}: {problem}.") from e
    if not isinstance(data, dict):
        raise InputFileError(
            f"{what} {path!r} holds a YAML {type(data).__name__}, not a mapping of config keys "
            "(e.g. 'MODEL:' with keys under it)."
        )


def check_dataset_json(path: str, dataset: str, keys: Iterable[str] = _COCO_KEYS) -> Dict[str, Any]:
    """Check that ``path`` is a COCO-format json with lists under ``keys`` (``images``,
    ``annotations`` and ``categories``); return it parsed.

    Raises:
        InputFileError: naming the dataset and the file.
    """
    what = f"dataset {dataset!r} json_file"
    _existing_file(path, what)
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InputFileError(f"{what}={path!r} is not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise InputFileError(
            f"{what}={path!r} holds a JSON {type(data).__name__}, not a COCO object with "
            f"{', '.join(_COCO_KEYS)}."
        )
    absent = [k for k in keys if not isinstance(data.get(k), list)]
    if absent:
        raise InputFileError(
            f"{what}={path!r} is not COCO format: no {' / '.join(repr(k) for k in absent)} list "
            f"(it has {sorted(data)[:8]})."
        )
    return data


def guard_dataset_json(name: str, training: bool) -> None:
    """Make the registered dataset ``name`` explain a bad ``json_file`` (its metadata's).

    The loader is wrapped, not preceded by a check, so a good file is parsed once: when the
    loader raises, returns no image, or (``training``) returns images none of which has an
    annotation, the file is checked (:func:`check_dataset_json`; test sets may lack
    ``annotations``, as COCO's test-dev does) and its error replaces the loader's. Datasets
    without a ``json_file`` and unregistered names are left alone.
    """
    from sephnet.backend import DatasetCatalog, MetadataCatalog

    if name not in DatasetCatalog.list():
        return
    json_file = MetadataCatalog.get(name).get("json_file", None)
    if not json_file or _is_remote(str(json_file)):
        return
    load = DatasetCatalog[name]
    if getattr(load, "_sephnet_json_guard", False):
        return
    keys = _COCO_KEYS if training else ("images", "categories")

    def guarded():
        try:
            records = load()
        except Exception:
            check_dataset_json(str(json_file), name, keys)
            raise
        if not records or (training and not any(r.get("annotations") for r in records)):
            check_dataset_json(str(json_file), name, keys)
        return records

    guarded._sephnet_json_guard = True
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, guarded)
