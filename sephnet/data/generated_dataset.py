"""Lazy, atomic, versioned generation of sephnet's synthetic datasets (shapes, clutter).

A generated dataset lives in a root folder with a ``generator.json`` holding the
generator's version and parameters. :func:`ensure_generated` regenerates the folder when
that file is missing or differs from what the caller expects, writing into a temporary
sibling folder that is renamed into place under a file lock, so an interrupted generation
never leaves a partial dataset and concurrent processes (distributed ranks, parallel
ablation runs) generate once.
"""
import json
import logging
import os
import shutil
import uuid
from typing import Any, Callable, Dict

from iopath.common.file_io import file_lock

__all__ = ["METADATA_FILE", "default_root", "ensure_generated", "write_metadata"]

logger = logging.getLogger(__name__)

#: The file in a dataset root that records the generator version and parameters.
METADATA_FILE = "generator.json"


def default_root(env_var: str, folder: str) -> str:
    """``$<env_var>`` if set, else ``$DETECTRON2_DATASETS/<folder>``, else ``datasets/<folder>``."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), folder)


def _is_current(root: str, metadata: Dict[str, Any]) -> bool:
    try:
        with open(os.path.join(root, METADATA_FILE)) as f:
            return json.load(f) == metadata
    except (OSError, ValueError):
        return False


def write_metadata(out_dir: str, metadata: Dict[str, Any]) -> None:
    """Write ``metadata`` as ``<out_dir>/generator.json`` (the generator's last step)."""
    with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=1, sort_keys=True)


def ensure_generated(root: str, metadata: Dict[str, Any], generate: Callable[[str], None]) -> str:
    """Make sure ``root`` holds the dataset described by ``metadata``.

    Args:
        root: the dataset folder.
        metadata: JSON-compatible ``{"version": ..., "params": ...}``; a stored
            ``generator.json`` equal to it means the dataset is current.
        generate: ``generate(out_dir)`` writes the whole dataset, ``generator.json``
            included, into the new folder ``out_dir``.

    Returns:
        The dataset root (absolute).
    """
    root = os.path.abspath(root)
    if _is_current(root, metadata):
        return root
    with file_lock(root):
        if _is_current(root, metadata):  # another process generated it meanwhile
            return root
        tmp = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
        logger.info("Generating a synthetic dataset into %s ...", root)
        try:
            generate(tmp)
            if os.path.exists(root):
                stale = f"{root}.old-{uuid.uuid4().hex[:8]}"
                os.rename(root, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
