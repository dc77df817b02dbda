"""Plot training curves from one or several runs' ``metrics.json``.

Usage::

    python -m sephnet.tools.plot_metrics output/quickstart/metrics.json --output curves.png
    python -m sephnet.tools.plot_metrics runA/metrics.json runB/metrics.json \\
        --labels baseline seph --output compare.png

``metrics.json`` is what detectron2's ``JSONWriter`` writes: one JSON object per line, each
with an integer ``"iteration"`` and the scalars recorded at that iteration (losses are
already median-smoothed by the writer; evaluation results appear as ``"bbox/AP"``...).
A resumed run appends to the same file, so an iteration may appear more than once: its
latest value wins.

The figure has one panel per quantity found in any run: ``total_loss``, each loss term
(``loss_*``), ``lr``, and the box and mask AP (``bbox/AP``, ``bbox/AP50``, ``bbox/AP75``;
``segm/...``). Every run is one colour across all panels, so runs can be compared.
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

__all__ = ["MetricsFileError", "RunMetrics", "load_metrics", "plot_runs", "main"]

# One curve: the iterations and the values, sorted by iteration.
Curve = Tuple[List[int], List[float]]

# AP metrics drawn per task, with the line style and marker of each.
_AP_STYLES = {"AP": ("-", "o"), "AP50": ("--", "s"), "AP75": (":", "^")}
_AP_TASKS = ("bbox", "segm")


class MetricsFileError(ValueError):
    """A ``metrics.json`` cannot be read; the message names the file and line."""


class RunMetrics:
    """The scalars of one run: ``curves[name] = (iterations, values)``, sorted by iteration.

    Attributes:
        label: how the run is named in legends.
        path: the file it was read from.
        curves: scalar name → (iterations, values); NaN values are kept (they show as gaps).
    """

    def __init__(self, label: str, path: str, curves: Dict[str, Curve]):
        self.label = label
        self.path = path
        self.curves = curves


def load_metrics(path: str, label: Optional[str] = None) -> RunMetrics:
    """Read one ``metrics.json``.

    Args:
        path: the file (one JSON object per line; blank lines are ignored).
        label: legend name; default: the name of the folder holding the file.

    Returns:
        The run's curves.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MetricsFileError: a line is not a JSON object with an integer ``"iteration"`` and
            numeric scalars (the message gives ``path:line`` and what was found), or the file
            holds no scalar at all.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file {path!r} does not exist.")
    # name -> {iteration: value}; a later line for the same iteration overrides (resume)
    series: Dict[str, Dict[int, float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsFileError(
                    f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON "
                    f"object per line as written by JSONWriter. Line starts: {line[:60]!r}"
                ) from e
            if not isinstance(record, dict):
                raise MetricsFileError(
                    f"{where}: expected a JSON object, got {type(record).__name__} {record!r:.60}."
                )
            iteration = record.get("iteration")
            if isinstance(iteration, bool) or not isinstance(iteration, int):
                raise MetricsFileError(
                    f"{where}: expected an integer 'iteration', got {iteration!r}."
                )
            for name, value in record.items():
                if name == "iteration":
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise MetricsFileError(
                        f"{where}: scalar {name!r} is {value!r}; expected a number."
                    )
                series.setdefault(name, {})[iteration] = float(value)
    if not series:
        raise MetricsFileError(f"{path}: holds no scalars (is it empty?).")
    curves = {
        name: ([it for it in sorted(points)], [points[it] for it in sorted(points)])
        for name, points in series.items()
    }
    if label is None:
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    return RunMetrics(label, path, curves)


def _panels(runs: Sequence[RunMetrics]) -> List[Tuple[str, List[str]]]:
    """(title, scalar names) of each panel, in display order, for names found in any run."""
    names = set().union(*(r.curves for r in runs))
    panels: List[Tuple[str, List[str]]] = []
    if "total_loss" in names:
        panels.append(("total_loss", ["total_loss"]))
    for name in sorted(n for n in names if n.startswith("loss_")):
        panels.append((name, [name]))
    if "lr" in names:
        panels.append(("lr", ["lr"]))
    for task in _AP_TASKS:
        metrics = [f"{task}/{m}" for m in _AP_STYLES if f"{task}/{m}" in names]
        if metrics:
            panels.append((f"{task} AP", metrics))
    return panels


def plot_runs(runs: Sequence[RunMetrics], output: str, columns: int = 3) -> List[str]:
    """Draw the runs' curves into one PNG (or any format matplotlib infers from the name).

    Args:
        runs: at least one run; each gets one colour in every panel.
        output: image file to write; its folder is created.
        columns: panels per row.

    Returns:
        The panel titles, in order.

    Raises:
        ValueError: no run, or no run holds a loss, ``lr`` or AP scalar.
    """
    if not runs:
        raise ValueError("plot_runs needs at least one run.")
    panels = _panels(runs)
    if not panels:
        found = sorted(set().union(*(r.curves for r in runs)))
        raise ValueError(
            "No plottable scalar (total_loss, loss_*, lr, bbox/AP*, segm/AP*) in "
            f"{', '.join(r.path for r in runs)}; found: {found}."
        )
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # one iteration range for every panel, so rare evaluations line up with the losses
    first = min(0, min(c[0][0] for r in runs for c in r.curves.values()))
    last = max(c[0][-1] for r in runs for c in r.curves.values())
    margin = max((last - first) * 0.03, 1)
    for ax, (title, names) in zip(axes.flat, panels):
        for run_index, run in enumerate(runs):
            color = colors[run_index % len(colors)]
            for name in names:
                if name not in run.curves:
                    continue
                iterations, values = run.curves[name]
                metric = name.split("/", 1)[1] if "/" in name else None
                if metric is None:
                    ax.plot(iterations, values, color=color, linewidth=1.2, label=run.label)
                    continue
                # evaluations are rare: mark every point and write the latest value
                linestyle, marker = _AP_STYLES[metric]
                ax.plot(
                    iterations,
                    values,
                    color=color,
                    linestyle=linestyle,
                    marker=marker,
                    markersize=5,
                    linewidth=1.2,
                    label=f"{run.label} {metric}",
                )
                ax.annotate(
                    f"{values[-1]:.1f}",
                    (iterations[-1], values[-1]),
                    textcoords="offset points",
                    xytext=(-6, 4),
                    ha="right",
                    fontsize=7,
                    color=color,
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlim(first - margin, last + margin)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if title.startswith("loss") or title == "total_loss":
            ax.set_ylim(bottom=0)
        else:
            ax.margins(y=0.12)  # room for the value labels above the highest point
        if len(runs) > 1 or len(names) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(output, dpi=80)
    plt.close(fig)
    return [title for title, _ in panels]


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sephnet.tools.plot_metrics",
        description="Plot losses, lr and AP over iterations from metrics.json files "
        "(several runs are overlaid, one colour each).",
    )
    parser.add_argument("metrics", nargs="+", metavar="METRICS_JSON", help="metrics.json files")
    parser.add_argument("--output", required=True, metavar="FILE", help="image to write (.png)")
    parser.add_argument(
        "--labels", nargs="+", metavar="NAME", help="legend name per file (default: its folder)"
    )
    parser.add_argument("--columns", type=int, default=3, help="panels per row (default 3)")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.metrics):
        parser.error(
            f"--labels has {len(args.labels)} names for {len(args.metrics)} metrics files."
        )
    if args.columns < 1:
        parser.error(f"--columns must be at least 1, got {args.columns}.")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry; returns the exit status (0 ok, 1 unreadable input)."""
    args = _parse_args(argv)
    labels = args.labels or [None] * len(args.metrics)
    try:
        runs = [load_metrics(path, label) for path, label in zip(args.metrics, labels)]
        panels = plot_runs(runs, args.output, columns=args.columns)
    except (OSError, ValueError) as e:
        print(f"plot_metrics: error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output}: {len(runs)} run(s), panels: {', '.join(panels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
