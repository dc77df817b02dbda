"""The experiment log as data: load ``configs/coco/ablations.yaml`` and pick rows from it.

The index (see its header) lists every row of the log with its config (or the component it
still waits for) and the log's reported COCO numbers, plus ``extras``: configs that are not
log rows (the reference recipe, cosine-classifier variants). Both kinds load as
:class:`AblationRow`; extras have ``table == "extra"`` and no log numbers.
"""
import dataclasses
import fnmatch
import os
from typing import List, Optional, Sequence

import yaml

__all__ = ["LOG_COLUMNS", "AblationRow", "load_index", "select_rows"]

#: The log's metric columns, in its order; also the order of COCOeval's ``stats``.
LOG_COLUMNS = (
    "mAP",
    "mAP@.50IOU",
    "mAP@.75IOU",
    "mAP (small)",
    "mAP (medium)",
    "mAP (large)",
    "AR@1",
    "AR@10",
    "AR@100",
    "AR@100 (small)",
    "AR@100 (medium)",
    "AR@100 (large)",
)

_ROW_KEYS = {"id", "label", "table", "config", "pending", "confidence", "changes", "bbox", "segm",
             "segm_label"}
_EXTRA_KEYS = {"id", "config", "confidence", "changes"}


@dataclasses.dataclass(frozen=True)
class AblationRow:
    """One entry of the index.

    Attributes:
        id: short unique name; also the run's folder name.
        label: the log's label (for extras: the id).
        table: "C3", "FPN-3", "sephv10 detail", or "extra" for non-log configs.
        config: absolute path of the config file, or None when ``pending``.
        pending: the component the row still needs, or None when it has a config.
        confidence: "H", "M" or "L" (docs/components.md#row-configs); "" when the index gives none.
        changes: what the row changes, in words.
        log_bbox: the log's 12 box numbers (``LOG_COLUMNS`` order), or None.
        log_segm: the log's 12 mask numbers, or None.
        segm_label: the log's segm-table label when it differs from ``label``, else None.
    """

    id: str
    label: str
    table: str
    config: Optional[str]
    pending: Optional[str]
    confidence: str
    changes: str
    log_bbox: Optional[List[float]] = None
    log_segm: Optional[List[float]] = None
    segm_label: Optional[str] = None

    @property
    def runnable(self) -> bool:
        """True when the row has a config (it is not waiting for a component)."""
        return self.config is not None


def _numbers(value, where: str) -> Optional[List[float]]:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != len(LOG_COLUMNS):
        raise ValueError(f"{where}: expected a list of {len(LOG_COLUMNS)} numbers, got {value!r}.")
    return [float(v) for v in value]


def _check_keys(entry, allowed, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {entry!r}.")
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected some of "
                         f"{sorted(allowed)}.")
    if "id" not in entry:
        raise ValueError(f"{where}: missing 'id'.")


def _config_path(entry, folder: str, where: str) -> Optional[str]:
    config, pending = entry.get("config"), entry.get("pending")
    if (config is None) == (pending is None):
        raise ValueError(f"{where}: expected exactly one of 'config' and 'pending', got "
                         f"config={config!r}, pending={pending!r}.")
    return None if config is None else os.path.normpath(os.path.join(folder, config))


def load_index(path: str) -> List[AblationRow]:
    """Read an ablation index.

    Args:
        path: the index YAML (``rows:`` and optional ``extras:``); config paths in it are
            relative to its folder.

    Returns:
        The log rows in the index's order, then the extras.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed entry or a duplicate id, naming the entry.
    """
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected a mapping with a 'rows' list.")
    folder = os.path.dirname(os.path.abspath(path))
    rows: List[AblationRow] = []
    for i, entry in enumerate(data["rows"]):
        where = f"{path}: rows[{i}]"
        _check_keys(entry, _ROW_KEYS, where)
        for key in ("label", "table"):
            if not isinstance(entry.get(key), str):
                raise ValueError(f"{where} ({entry['id']}): missing or non-string {key!r}.")
        rows.append(AblationRow(
            id=str(entry["id"]),
            label=entry["label"],
            table=entry["table"],
            config=_config_path(entry, folder, where),
            pending=entry.get("pending"),
            confidence=str(entry.get("confidence", "")),
            changes=str(entry.get("changes", "")),
            log_bbox=_numbers(entry.get("bbox"), f"{where} ({entry['id']}) bbox"),
            log_segm=_numbers(entry.get("segm"), f"{where} ({entry['id']}) segm"),
            segm_label=entry.get("segm_label"),
        ))
    for i, entry in enumerate(data.get("extras") or []):
        where = f"{path}: extras[{i}]"
        _check_keys(entry, _EXTRA_KEYS, where)
        rows.append(AblationRow(
            id=str(entry["id"]),
            label=str(entry["id"]),
            table="extra",
            config=_config_path(entry, folder, where),
            pending=None,
            confidence=str(entry.get("confidence", "")),
            changes=str(entry.get("changes", "")),
        ))
    seen = set()
    for row in rows:
        if row.id in seen:
            raise ValueError(f"{path}: duplicate id {row.id!r}.")
        seen.add(row.id)
    return rows


#: ``--rows`` names of row groups: the log's rows, the extras.
_GROUPS = ("@log", "@extras")


def select_rows(rows: Sequence[AblationRow], patterns: Sequence[str]) -> List[AblationRow]:
    """The rows matching any pattern, in index order, each once.

    ``@log`` picks every row of the log and ``@extras`` every extra (``"*"`` picks both). Else
    a pattern equal to a row's id picks that row; else one equal to labels picks those rows
    (the log's label "sephv2" is not the row with id "sephv2"); else it is an ``fnmatch``
    glob over ids and labels. Pending rows are never selected.

    Raises:
        ValueError: a pattern matches no row, or only pending rows (the message names the
            components they wait for).
    """
    chosen = set()
    for pattern in patterns:
        if pattern in _GROUPS:
            extras = pattern == "@extras"
            chosen.update(r.id for r in rows if r.runnable and (r.table == "extra") == extras)
            continue
        hits = [r for r in rows if r.id == pattern] or [r for r in rows if r.label == pattern]
        hits = hits or [r for r in rows if fnmatch.fnmatchcase(r.id, pattern)
                        or fnmatch.fnmatchcase(r.label, pattern)]
        if not hits:
            raise ValueError(f"--rows {pattern!r} matches no id or label of the index; ids: "
                             f"{', '.join(r.id for r in rows)}.")
        runnable = [r for r in hits if r.runnable]
        if not runnable:
            waits = "; ".join(f"{r.id}: {r.pending}" for r in hits)
            raise ValueError(f"--rows {pattern!r} matches only pending rows ({waits}).")
        chosen.update(r.id for r in runnable)
    return [r for r in rows if r.id in chosen]
