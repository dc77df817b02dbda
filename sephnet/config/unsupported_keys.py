"""Config keys that exist in the defaults tree but that nothing acts on: setting one is an error.

detectron2's defaults describe features the portable core does not implement (keypoints,
semantic/panoptic segmentation, RetinaNet as a meta-architecture, deformable and rotated
convolutions ...), and a few keys no code reads at all. A config that sets such a key to
anything but its default would otherwise run without the feature and report results as if
it had been used. :func:`validate_config` (run by ``validate_sephnet_config`` at setup)
refuses it, naming the key.

:data:`REFUSED_KEYS` is the one table of such keys. Implementing a feature means reading its
keys and deleting their line here; ``tests/config/test_unsupported_keys.py`` checks that every
key of the defaults tree is either read by sephnet's code or listed here, and that no listed
key is read.
"""
from typing import Any, Dict, Iterator, Tuple

from sephnet.backend import BACKEND, CfgNode, get_cfg

__all__ = ["REFUSED_KEYS", "refused_key_errors"]

CORE, BOTH = ("core",), ("core", "detectron2")

#: key (``NODE.*`` covers every key under NODE) -> (backends on which it is refused, why /
#: what to use instead). One line per entry.
REFUSED_KEYS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "GLOBAL.HACK": (BOTH, "no code reads it (detectron2 included)"),
    "MODEL.ANCHOR_GENERATOR.ANGLES": (CORE, "rotated anchors (RotatedAnchorGenerator) are not in the core"),
    "MODEL.ROI_KEYPOINT_HEAD.*": (CORE, "keypoint heads are not in the core"),
    "MODEL.SEM_SEG_HEAD.*": (CORE, "semantic segmentation heads are not in the core"),
    "MODEL.PANOPTIC_FPN.*": (CORE, "PanopticFPN is not in the core"),
}


def _leaves(node: CfgNode, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for key, value in node.items():
        if isinstance(value, CfgNode):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _same(a: Any, b: Any) -> bool:
    """Config values equal up to list/tuple (yaml gives lists where the defaults hold tuples)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _entry(key: str):
    for pattern, entry in REFUSED_KEYS.items():
        if key == pattern or (pattern.endswith(".*") and key.startswith(pattern[:-1])):
            return entry
    return None


def refused_key_errors(cfg: CfgNode, defaults: CfgNode, backend: str = BACKEND) -> Iterator[str]:
    """One message per key of ``cfg`` that is refused on ``backend`` and differs from ``defaults``."""
    default_values = dict(_leaves(defaults))
    for key, value in _leaves(cfg):
        entry = _entry(key)
        if entry is None or backend not in entry[0] or key not in default_values:
            continue
        if not _same(value, default_values[key]):
            where = "" if entry[0] == BOTH else f" on the {backend} backend"
            yield (f"{key}={value!r} is not supported{where}: {entry[1]}; remove it from the "
                   f"config (its default is {default_values[key]!r}).")


def add_config(cfg: CfgNode) -> None:
    """No keys of its own."""


def validate_config(cfg: CfgNode) -> None:
    """Raise ``ValueError`` naming every refused key that ``cfg`` sets to a non-default value."""
    from sephnet.config import add_sephnet_config  # the package imports this module

    defaults = get_cfg()
    add_sephnet_config(defaults)
    errors = list(refused_key_errors(cfg, defaults))
    if errors:
        raise ValueError(" ".join(errors))
