"""Our results beside the experiment log's: a markdown table and a bar chart of AP differences.

Examples::

    # rebuild results.md and ap_diff.png from the finished runs under an output root
    python -m sephnet.tools.results_table --output-root output/ablations

    # the README's table of rows (row -> config -> what it changes -> the log's AP)
    python -m sephnet.tools.results_table --readme

The table keeps the log's own column layout (``LOG_COLUMNS``); each row appears twice, the
log's line then ours (label suffixed ``(ours)``); a value a run did not produce is ``-``.
"""
import argparse
import json
import math
import os
import posixpath
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sephnet.tools.ablation_index import LOG_COLUMNS, AblationRow, load_index

__all__ = [
    "FINAL_METRICS",
    "render_table",
    "render_readme_rows",
    "plot_ap_differences",
    "write_results",
    "load_measured",
    "main",
]

#: File in a run folder that marks the run finished and holds its final metrics.
FINAL_METRICS = "final_metrics.json"

Measured = Mapping[str, Mapping[str, Sequence[Optional[float]]]]
_TASKS = ("bbox", "segm")


def _cell(value: Optional[float]) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _line(label: str, values: Optional[Sequence[Optional[float]]]) -> str:
    values = values if values is not None else [None] * len(LOG_COLUMNS)
    # A "|" inside a label would split the cell.
    return "|" + "|".join([label.replace("|", "/")] + [_cell(v) for v in values]) + "|"


def _log_values(row: AblationRow, task: str) -> Optional[List[float]]:
    return row.log_bbox if task == "bbox" else row.log_segm


def render_table(rows: Sequence[AblationRow], measured: Measured, task: str = "bbox") -> str:
    """Markdown table of one task in the log's layout.

    Args:
        rows: the rows to show, in order (those without a measurement and without log
            numbers for ``task`` are left out).
        measured: ``{row id: {task: 12 values (None = not produced)}}``, fractions.
        task: "bbox" or "segm".

    Returns:
        The table text: header ``|配置|mAP|...|``, then per row the log's line (when the
        log has the task for it) and ours (when measured).

    Raises:
        ValueError: ``task`` is unknown or a measurement has the wrong length.
    """
    if task not in _TASKS:
        raise ValueError(f"task={task!r}; expected one of {_TASKS}.")
    lines = ["|配置|" + "|".join(LOG_COLUMNS) + "|", "|" + "---|" * (len(LOG_COLUMNS) + 1)]
    for row in rows:
        ours = measured.get(row.id, {}).get(task)
        if ours is not None and len(ours) != len(LOG_COLUMNS):
            raise ValueError(f"measured[{row.id!r}][{task!r}] has {len(ours)} values; expected "
                             f"{len(LOG_COLUMNS)} ({', '.join(LOG_COLUMNS)}).")
        log = _log_values(row, task)
        if log is not None:
            label = row.segm_label if task == "segm" and row.segm_label else row.label
            lines.append(_line(label, log))
        if ours is not None:
            lines.append(_line(f"{row.label} (ours)", ours))
    return "\n".join(lines) + "\n"


def _ap_differences(rows: Sequence[AblationRow], measured: Measured, task: str):
    """(row ids, ours - log mAP) for the rows with both numbers."""
    names, diffs = [], []
    for row in rows:
        ours = measured.get(row.id, {}).get(task)
        log = _log_values(row, task)
        if ours is None or log is None or ours[0] is None or math.isnan(ours[0]):
            continue
        names.append(row.id)
        diffs.append(ours[0] - log[0])
    return names, diffs


def plot_ap_differences(rows: Sequence[AblationRow], measured: Measured, path: str) -> str:
    """Bar chart PNG of our mAP minus the log's, per row (bbox; segm beside it when any row
    has both), written with matplotlib's Agg backend. Rows without both numbers are left
    out; with none at all the chart says so. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {task: _ap_differences(rows, measured, task) for task in _TASKS}
    names = [r.id for r in rows if any(r.id in series[t][0] for t in _TASKS)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2.0), 4.0))
    width = 0.4 if series["segm"][0] else 0.8
    for k, task in enumerate(t for t in _TASKS if series[t][0]):
        lookup = dict(zip(*series[task]))
        xs = [i + k * width for i, n in enumerate(names) if n in lookup]
        ys = [lookup[n] for n in names if n in lookup]
        ax.bar(xs, ys, width=width, label=f"{task} mAP")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks([i + (width / 2 if series["segm"][0] else 0.0) for i in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("ours - log (mAP)")
    ax.set_title("mAP difference to the experiment log")
    if names:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no row has both a run and log numbers", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(rows: Sequence[AblationRow], measured: Measured, output_root: str
                  ) -> Tuple[str, str]:
    """Write ``results.md`` (bbox table, then segm when any row has segm numbers) and
    ``ap_diff.png`` into ``output_root``; only rows in ``measured`` are shown.

    Returns:
        (table path, chart path).
    """
    shown = [r for r in rows if r.id in measured]
    parts = ["# sephnet runs beside the experiment log\n", "## bbox\n",
             render_table(shown, measured)]
    if any(r.log_segm is not None or "segm" in measured[r.id] for r in shown):
        parts += ["\n## segm\n", render_table(shown, measured, "segm")]
    os.makedirs(output_root, exist_ok=True)
    table_path = os.path.join(output_root, "results.md")
    with open(table_path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    chart_path = plot_ap_differences(shown, measured, os.path.join(output_root, "ap_diff.png"))
    return table_path, chart_path


def render_readme_rows(rows: Sequence[AblationRow], config_prefix: str = "configs/coco/",
                       costs: Optional[Mapping[str, Mapping[str, Optional[float]]]] = None,
                       index_folder: Optional[str] = None) -> str:
    """The README's markdown table: row -> config -> what it changes -> the log's AP, and,
    given ``costs`` (``{row id: {"gflops", "params_m", "latency_s"}}``, see
    :mod:`sephnet.tools.row_costs`), GFLOPs, parameters and CPU latency columns.

    A config is shown as ``config_prefix`` (how the README names the index's folder) plus its
    path relative to ``index_folder`` (e.g. ``configs/tricks/X.yaml`` for ``../tricks/X.yaml``),
    or plus its file name when ``index_folder`` is None.

    One line per index entry (log rows, then extras); a pending row names the component it
    waits for instead of a config; AP is the log's bbox mAP (and segm mAP where the log has
    it); a row without a cost shows ``-``.
    """
    header = "| table | row (log label) | config | conf. | what it changes | log AP (bbox / segm) |"
    rule = "|---|---|---|---|---|---|"
    if costs is not None:
        header += " GFLOPs | params (M) | CPU latency (s) |"
        rule += "---|---|---|"
    lines = [header, rule]
    for row in rows:
        if row.config is not None:
            name = (os.path.basename(row.config) if index_folder is None
                    else os.path.relpath(row.config, index_folder).replace(os.sep, "/"))
            config = f"`{posixpath.normpath(config_prefix + name)}`"
        else:
            config = f"pending: {row.pending}"
        ap = "-" if row.log_bbox is None else f"{row.log_bbox[0]:.3f}"
        if row.log_segm is not None:
            ap += f" / {row.log_segm[0]:.3f}"
        label = row.label.replace("|", "/")
        line = (f"| {row.table} | {label} | {config} | {row.confidence or '-'} | "
                f"{row.changes} | {ap} |")
        if costs is not None:
            cost = costs.get(row.id, {})
            line += "".join(f" {'-' if cost.get(k) is None else f'{cost[k]:{fmt}}'} |"
                            for k, fmt in (("gflops", ".1f"), ("params_m", ".1f"),
                                           ("latency_s", ".2f")))
        lines.append(line)
    return "\n".join(lines) + "\n"


def load_measured(rows: Sequence[AblationRow], output_root: str) -> Dict[str, Dict]:
    """``{row id: final metrics}`` of the rows whose ``<output_root>/<id>/final_metrics.json``
    exists."""
    measured = {}
    for row in rows:
        path = os.path.join(output_root, row.id, FINAL_METRICS)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                measured[row.id] = json.load(f)
    return measured


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m sephnet.tools.results_table``."""
    parser = argparse.ArgumentParser(
        prog="python -m sephnet.tools.results_table",
        description="Write results.md and ap_diff.png for finished ablation runs, or print "
        "the README table of the log's rows.",
    )
    parser.add_argument("--index", default=os.path.join("configs", "coco", "ablations.yaml"))
    parser.add_argument("--output-root", default=os.path.join("output", "ablations"))
    parser.add_argument("--readme", action="store_true", help="print the README rows table")
    parser.add_argument("--costs", default=os.path.join("benchmarks", "results", "row_costs.json"),
                        help="row_costs.json for the README table's cost columns (skipped when "
                        "the file does not exist)")
    args = parser.parse_args(argv)
    rows = load_index(args.index)
    if args.readme:
        from sephnet.tools.row_costs import load_costs

        costs = load_costs(args.costs) if os.path.isfile(args.costs) else None
        print(render_readme_rows(rows, costs=costs,
                                 index_folder=os.path.dirname(os.path.abspath(args.index))),
              end="")
        return 0
    measured = load_measured(rows, args.output_root)
    if not measured:
        raise SystemExit(f"no final_metrics.json under {args.output_root}/<row id>/.")
    for path in write_results(rows, measured, args.output_root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
