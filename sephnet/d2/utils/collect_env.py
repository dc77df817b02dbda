"""``collect_env_info()``: a table of the software environment, for logs and bug reports."""

import importlib
import importlib.metadata
import os
import platform
import sys
from typing import List, Optional, Tuple

import numpy as np
import torch
from tabulate import tabulate

__all__ = ["collect_env_info"]


def _module_version(module_name: str) -> str:
    """``module.__version__`` plus its location, or why it could not be imported."""
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # broken installs raise more than ImportError
        return f"not available ({type(e).__name__})"
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module_name)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown version"
    location = os.path.dirname(getattr(module, "__file__", "") or "")
    return f"{version} @{location}" if location else str(version)


def _cuda_rows() -> List[Tuple[str, str]]:
    if not torch.cuda.is_available():
        return [("CUDA available", "No")]
    rows = [("CUDA available", "Yes"), ("CUDA runtime version", str(torch.version.cuda))]
    for index in range(torch.cuda.device_count()):
        rows.append((f"GPU {index}", torch.cuda.get_device_name(index)))
    return rows


def collect_env_info(backend: Optional[str] = None) -> str:
    """Return a two-column table (plain text) describing the environment.

    Rows: platform, Python, numpy, the core's version, torch (with CUDA availability, and
    the GPUs when there are any), torchvision's usability as the core sees it, fvcore,
    iopath, pycocotools, cv2.

    Args:
        backend: an optional description of the backend in use (e.g. ``"core
            (sephnet.d2)"``); adds a "backend" row.
    """
    import sephnet.d2
    from sephnet.d2.layers.torchvision_ops import torchvision_status

    rows: List[Tuple[str, str]] = [
        ("sys.platform", sys.platform),
        ("Platform", platform.platform()),
        ("Python", sys.version.replace("\n", "")),
        ("numpy", np.__version__),
    ]
    if backend is not None:
        rows.append(("backend", backend))
    rows += [
        (
            "sephnet core (sephnet.d2)",
            f"{sephnet.d2.__version__} @{os.path.dirname(sephnet.d2.__file__)}",
        ),
        ("PyTorch", f"{torch.__version__} @{os.path.dirname(torch.__file__)}"),
        ("PyTorch debug build", str(torch.version.debug)),
    ]
    rows += _cuda_rows()
    rows += [
        ("torchvision", torchvision_status()),
        ("fvcore", _module_version("fvcore")),
        ("iopath", _module_version("iopath")),
        ("pycocotools", _module_version("pycocotools")),
        ("faster_coco_eval", _module_version("faster_coco_eval")),
        ("cv2", _module_version("cv2")),
    ]
    return tabulate(rows)


if __name__ == "__main__":
    print(collect_env_info())
