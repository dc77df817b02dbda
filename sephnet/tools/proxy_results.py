"""Results of a proxy study (several seeds per row) beside the experiment log's numbers.

``python -m sephnet.tools.ablate --proxy`` runs each row with N seeds into
``<root>/<row id>/seed<k>/``; this module reads their ``final_metrics.json`` (and
``timing.json``) and writes into ``<root>``:

- ``results.md``: the study's settings (from ``<root>/proxy.json``), per task a table in the
  log's column layout with, per row, the log's line and ours as ``mean ± std`` over the seeds
  (sample std; ``n`` = seeds finished), Spearman's rank correlation between our mean bbox mAP
  and the log's over the rows that have both, and the runs' times;
- ``proxy_ap.png``: per row, in the log's order, the log's bbox mAP beside our mean with its
  seed spread (error bar: min to max; dots: the seeds).

Example::

    python -m sephnet.tools.proxy_results --output-root output/ablations-proxy
"""
import argparse
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sephnet.tools.ablation_index import LOG_COLUMNS, AblationRow, load_index
from sephnet.tools.results_table import FINAL_METRICS

__all__ = [
    "PROXY_SETTINGS",
    "TIMING",
    "SeedStats",
    "aggregate_seeds",
    "load_seed_metrics",
    "plot_proxy_chart",
    "rank_correlation",
    "render_proxy_table",
    "write_proxy_results",
    "main",
]

#: File in the study root with the study's settings (written by the runner).
PROXY_SETTINGS = "proxy.json"
#: File in a run folder with its accumulated ``{"wall_s", "cpu_s"}``.
TIMING = "timing.json"

_TASKS = ("bbox", "segm")
# {row id: {seed: final metrics ({task: 12 values or None})}}
SeedMetrics = Mapping[str, Mapping[int, Mapping[str, Sequence[Optional[float]]]]]
# per column: (mean, sample std, number of seeds with a value); None mean = no value
SeedStats = List[Tuple[Optional[float], Optional[float], int]]


def _finite(value: Optional[float]) -> bool:
    return value is not None and not math.isnan(value)


def aggregate_seeds(per_seed: Sequence[Sequence[Optional[float]]]) -> SeedStats:
    """Per column of the seeds' 12 values: (mean, sample std (ddof 1; None for one seed),
    count); missing or NaN values are left out of that column.

    Raises:
        ValueError: a seed's list does not have ``len(LOG_COLUMNS)`` values.
    """
    for values in per_seed:
        if len(values) != len(LOG_COLUMNS):
            raise ValueError(f"a seed has {len(values)} values; expected {len(LOG_COLUMNS)}.")
    stats: SeedStats = []
    for column in range(len(LOG_COLUMNS)):
        xs = [v[column] for v in per_seed if _finite(v[column])]
        if not xs:
            stats.append((None, None, 0))
            continue
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        stats.append((mean, std, len(xs)))
    return stats


def _row_stats(metrics: SeedMetrics, row_id: str, task: str) -> Optional[SeedStats]:
    per_seed = [m[task] for _, m in sorted(metrics.get(row_id, {}).items()) if m.get(task)]
    return aggregate_seeds(per_seed) if per_seed else None


def _cell(value: Optional[float]) -> str:
    return "-" if not _finite(value) else f"{value:.3f}"


def _stat_cell(stat: Tuple[Optional[float], Optional[float], int]) -> str:
    mean, std, _ = stat
    if mean is None:
        return "-"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def render_proxy_table(rows: Sequence[AblationRow], metrics: SeedMetrics, task: str = "bbox") -> str:
    """Markdown table of one task: header ``|配置|seeds|<LOG_COLUMNS>|``, then per row the
    log's line (seeds ``log``; when the log has the task) and ours (label + ``(ours)``,
    ``mean ± std`` cells; when any seed has the task).

    Raises:
        ValueError: unknown ``task``, or a seed's metrics with the wrong length.
    """
    if task not in _TASKS:
        raise ValueError(f"task={task!r}; expected one of {_TASKS}.")
    lines = ["|配置|seeds|" + "|".join(LOG_COLUMNS) + "|", "|" + "---|" * (len(LOG_COLUMNS) + 2)]
    for row in rows:
        log = row.log_bbox if task == "bbox" else row.log_segm
        label = (row.segm_label if task == "segm" and row.segm_label else row.label).replace("|", "/")
        if log is not None:
            lines.append(f"|{label}|log|" + "|".join(_cell(v) for v in log) + "|")
        stats = _row_stats(metrics, row.id, task)
        if stats is not None:
            seeds = max(n for _, _, n in stats)
            lines.append(f"|{row.label.replace('|', '/')} (ours)|{seeds}|"
                         + "|".join(_stat_cell(s) for s in stats) + "|")
    return "\n".join(lines) + "\n"


def rank_correlation(rows: Sequence[AblationRow], metrics: SeedMetrics, task: str = "bbox"
                     ) -> Tuple[Optional[float], Optional[float], int]:
    """Spearman's rho (and its two-sided p-value) between our mean mAP and the log's over the
    rows that have both; ``(None, None, n)`` with fewer than 3 such rows or constant ranks."""
    ours, logs = [], []
    for row in rows:
        log = row.log_bbox if task == "bbox" else row.log_segm
        stats = _row_stats(metrics, row.id, task)
        if log is None or stats is None or stats[0][0] is None:
            continue
        ours.append(stats[0][0])
        logs.append(log[0])
    if len(ours) < 3 or len(set(ours)) < 2 or len(set(logs)) < 2:
        return None, None, len(ours)
    from scipy.stats import spearmanr

    result = spearmanr(ours, logs)
    return float(result.statistic), float(result.pvalue), len(ours)


def plot_proxy_chart(rows: Sequence[AblationRow], metrics: SeedMetrics, path: str) -> str:
    """Bar chart PNG (matplotlib Agg) of bbox mAP per row in the given (log) order: the
    log's bar beside our mean, with our min-max spread as an error bar and each seed as a
    dot. Rows with neither number are left out. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.log_bbox is not None or _row_stats(metrics, r.id, "bbox")]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(shown) + 2.0), 4.5))
    width = 0.38
    labels = {"log": "log (COCO, R-50, 120k it)", "ours": "ours (proxy): seed mean, min-max, seeds"}

    def once(key: str) -> Optional[str]:
        return labels.pop(key, None)  # each legend entry on its first bar only

    for i, row in enumerate(shown):
        if row.log_bbox is not None:
            ax.bar(i - width / 2, row.log_bbox[0], width, color="0.7", label=once("log"))
        seeds = [m["bbox"][0] for _, m in sorted(metrics.get(row.id, {}).items())
                 if m.get("bbox") and _finite(m["bbox"][0])]
        if seeds:
            mean = sum(seeds) / len(seeds)
            ax.bar(i + width / 2, mean, width, color="tab:blue",
                   yerr=[[mean - min(seeds)], [max(seeds) - mean]], capsize=3, label=once("ours"))
            ax.plot([i + width / 2] * len(seeds), seeds, "k.", markersize=4)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([r.id for r in shown], rotation=35, ha="right")
    ax.set_ylabel("bbox mAP")
    ax.set_title("proxy study: bbox mAP per row (log order)")
    if shown:
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no row has a run or log numbers", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def load_seed_metrics(rows: Sequence[AblationRow], output_root: str
                      ) -> Tuple[Dict[str, Dict[int, Dict]], Dict[str, Dict[int, Dict]]]:
    """``(metrics, timings)``: ``{row id: {seed: content}}`` of every
    ``<output_root>/<row id>/seed<k>/final_metrics.json`` and ``timing.json`` found."""
    metrics: Dict[str, Dict[int, Dict]] = {}
    timings: Dict[str, Dict[int, Dict]] = {}
    for row in rows:
        row_dir = os.path.join(output_root, row.id)
        if not os.path.isdir(row_dir):
            continue
        for name in sorted(os.listdir(row_dir)):
            if not (name.startswith("seed") and name[4:].isdigit()):
                continue
            for file_name, into in ((FINAL_METRICS, metrics), (TIMING, timings)):
                path = os.path.join(row_dir, name, file_name)
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as f:
                        into.setdefault(row.id, {})[int(name[4:])] = json.load(f)
    return metrics, timings


def _read_json(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pretrain_line(pretrain: Mapping[str, Any], output_root: str) -> str:
    """What the backbone pretraining was, its own bbox mAP and time, as far as known."""
    folder = os.path.join(output_root, pretrain["folder"])
    line = (f"Backbone: pretrained once for every row and seed by `{pretrain['config']}` "
            f"(from scratch, {pretrain['iterations']} iterations, seed {pretrain['seed']}, "
            f"folder `{pretrain['folder']}`); rows load its ResNet weights (`MODEL.WEIGHTS`) and "
            "keep their own `MODEL.BACKBONE.FREEZE_AT`.")
    metrics = _read_json(os.path.join(folder, FINAL_METRICS))
    if metrics and metrics.get("bbox") and _finite(metrics["bbox"][0]):
        line += f" Its own bbox mAP on the test set: {metrics['bbox'][0]:.3f}."
    timing = _read_json(os.path.join(folder, TIMING))
    if timing:
        line += f" It took {timing['wall_s'] / 60:.1f} min wall, {timing['cpu_s'] / 60:.1f} CPU-min."
    return line + "\n"


def _settings_section(settings: Mapping[str, Any], output_root: str) -> List[str]:
    if not settings:
        return []
    lines = ["## Settings\n"]
    if settings.get("command"):
        lines.append(f"Command: `{settings['command']}`\n")
    lines.append(f"Iterations: {settings.get('iterations')}; seeds: {settings.get('seeds')}; "
                 f"anchor sizes: each row's own x {settings.get('anchor_scale')}.\n")
    if settings.get("pretrain"):
        lines.append(_pretrain_line(settings["pretrain"], output_root))
    opts = settings.get("overrides", [])
    pairs = [f"`{k} {v}`" for k, v in zip(opts[::2], opts[1::2])]
    lines.append("Overrides applied to every row (before any `--opts`): " + ", ".join(pairs) + "\n")
    if settings.get("user_opts"):
        lines.append(f"Extra `--opts`: `{' '.join(settings['user_opts'])}`\n")
    return lines


def _timing_section(rows: Sequence[AblationRow], timings: Mapping[str, Mapping[int, Mapping]],
                    expected_runs: Optional[int]) -> List[str]:
    runs = [(r.id, s, t) for r in rows for s, t in sorted(timings.get(r.id, {}).items())]
    if not runs:
        return []
    wall = sum(t["wall_s"] for _, _, t in runs)
    cpu = sum(t["cpu_s"] for _, _, t in runs)
    of = f" of {expected_runs}" if expected_runs else ""
    lines = ["## Time\n",
             f"{len(runs)}{of} runs timed; summed over runs: wall {wall / 60:.1f} min, "
             f"CPU {cpu / 60:.1f} min (user + system of each train_net process).\n",
             "|row|seed|wall (min)|CPU (min)|", "|---|---|---|---|"]
    lines += [f"|{rid}|{s}|{t['wall_s'] / 60:.1f}|{t['cpu_s'] / 60:.1f}|" for rid, s, t in runs]
    return lines + [""]


def write_proxy_results(rows: Sequence[AblationRow], metrics: SeedMetrics, output_root: str,
                        settings: Optional[Mapping[str, Any]] = None,
                        timings: Optional[Mapping[str, Mapping[int, Mapping]]] = None
                        ) -> Tuple[str, str]:
    """Write ``results.md`` and ``proxy_ap.png`` into ``output_root`` (see the module
    docstring); ``rows`` give the order; rows with no finished seed are left out of the
    tables but counted in the expected runs. Returns (table path, chart path)."""
    settings = settings or {}
    shown = [r for r in rows if r.id in metrics]
    rho, p, n = rank_correlation(shown, metrics)
    if rho is None:
        corr = f"Spearman rank correlation of bbox mAP, ours vs the log: n/a ({n} rows with both)."
    else:
        corr = (f"Spearman rank correlation of bbox mAP, ours (mean over seeds) vs the log, over "
                f"{n} rows: rho = {rho:.2f} (two-sided p = {p:.3f}).")
    parts = ["# Proxy study: the log's rows at laptop scale\n", *_settings_section(settings, output_root),
             "## bbox\n", render_proxy_table(shown, metrics), corr + "\n"]
    if any(r.log_segm is not None or any(m.get("segm") for m in metrics[r.id].values()) for r in shown):
        parts += ["## segm\n", render_proxy_table(shown, metrics, "segm")]
    seeds = settings.get("seeds")
    parts += _timing_section(rows, timings or {}, len(rows) * seeds if seeds else None)
    os.makedirs(output_root, exist_ok=True)
    table_path = os.path.join(output_root, "results.md")
    with open(table_path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    chart_path = plot_proxy_chart(shown, metrics, os.path.join(output_root, "proxy_ap.png"))
    return table_path, chart_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m sephnet.tools.proxy_results``: rewrite the study's files."""
    parser = argparse.ArgumentParser(prog="python -m sephnet.tools.proxy_results",
                                     description="Write results.md and proxy_ap.png of a proxy study.")
    parser.add_argument("--index", default=os.path.join("configs", "coco", "ablations.yaml"))
    parser.add_argument("--output-root", default=os.path.join("output", "ablations-proxy"))
    args = parser.parse_args(argv)
    settings_path = os.path.join(args.output_root, PROXY_SETTINGS)
    if not os.path.isfile(settings_path):
        raise SystemExit(f"{settings_path} not found; is --output-root a proxy study?")
    with open(settings_path, encoding="utf-8") as f:
        settings = json.load(f)
    index = {r.id: r for r in load_index(args.index)}
    rows = [index[i] for i in settings["rows"] if i in index]
    metrics, timings = load_seed_metrics(rows, args.output_root)
    for path in write_proxy_results(rows, metrics, args.output_root, settings, timings):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
