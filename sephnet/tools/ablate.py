"""Run rows of the experiment log through ``train_net.py`` and tabulate them against the log.

Examples::

    # two rows on COCO, one after the other, each with 3 GPUs
    python -m sephnet.tools.ablate --rows sephv14 'sephv15*' --num-gpus 3

    # every runnable row of the FPN-3 table's 4) family, one row per GPU on 8 GPUs
    python -m sephnet.tools.ablate --rows '4)*' --num-gpus 8 --parallel-gpus

    # a CPU smoke run of three rows on the synthetic shapes data (tiny model and schedule)
    python -m sephnet.tools.ablate --rows fpn3-baseline sephv2 sephv14 --shapes-smoke

    # the proxy study: rows at laptop scale on the clutter dataset, 2 seeds, 2 runs at once
    python -m sephnet.tools.ablate --proxy --rows fpn3-baseline seph-bn seph --seeds 2 --parallel 2

Rows are picked from the index (``configs/coco/ablations.yaml``) by id, label or glob. Each
runs as ``python train_net.py --config-file <config> [--resume] OUTPUT_DIR <root>/<id>
[smoke opts and the row's] [--opts ...]`` with its output in ``<root>/<id>/`` (log: ``ablate.log``).
A row whose folder holds ``final_metrics.json`` is finished and skipped; one whose folder
holds a ``last_checkpoint`` was interrupted and resumes from it. When a run ends, its final
metrics are collected into ``final_metrics.json`` (see :func:`collect_metrics`); at the end
``results.md`` and ``ap_diff.png`` (:mod:`sephnet.tools.results_table`) are written to the
output root for every selected row that has final metrics.

``--proxy`` (:mod:`sephnet.tools.proxy`) runs every row with the same proxy overrides and
``--seeds N`` seeds, one folder per run (``<root>/<id>/seed<k>/``, same skip/resume rules),
seed 0 of every row before seed 1, and writes the study's settings to ``<root>/proxy.json``,
each run's wall and CPU time to its ``timing.json``, and ``results.md`` / ``proxy_ap.png``
(:mod:`sephnet.tools.proxy_results`: mean ± std over seeds, rank correlation with the log).
``--parallel K`` runs K trainings at once on the CPU, each with ``cpu_count / K`` threads.
"""
import argparse
import contextlib
import io
import json
import math
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from sephnet.tools.ablation_index import LOG_COLUMNS, AblationRow, load_index, select_rows
from sephnet.tools.proxy import (
    ANCHOR_SCALE,
    BACKBONE_WEIGHTS,
    PRETRAIN_SEED,
    extract_backbone,
    pretrain_opts,
    PROXY_NUM_CLASSES,
    proxy_opts,
    row_anchor_sizes,
    row_model_opts,
    scaled_anchor_sizes,
)
from sephnet.tools.proxy_results import (
    PROXY_SETTINGS,
    TIMING,
    load_seed_metrics,
    write_proxy_results,
)
from sephnet.tools.results_table import FINAL_METRICS, load_measured, write_results

__all__ = [
    "SHAPES_NUM_CLASSES",
    "shapes_smoke_opts",
    "shapes_smoke_row_opts",
    "run_state",
    "build_command",
    "collect_metrics",
    "run_rows",
    "proxy_runs",
    "run_proxy_study",
    "main",
]

_TASKS = ("bbox", "segm")
#: Default --proxy-iters: 11 rows x 2 seeds took 2.8 CPU-hours (0.6-2.1 CPU-s per iteration
#: and row) plus the pretraining's 0.25, about 1.5 hours on 2 quiet cores.
PROXY_ITERATIONS = 400
#: Default --pretrain-iters: the backbone pretraining run (about 6 minutes on 2 quiet cores).
PRETRAIN_ITERATIONS = 1000
#: Folder of the pretraining run in a proxy study's root (not a row id: ids hold no "_" prefix).
PRETRAIN_DIR = "_pretrain"
# detectron2's COCOEvaluator keys (percent) for the log's first six columns.
_D2_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Classes of the shapes dataset: len(sephnet.data.shapes.SHAPES_CLASSES), kept import-free
#: for the CLI.
SHAPES_NUM_CLASSES = 3


def shapes_smoke_opts(iterations: int) -> List[str]:
    """Config overrides that turn any log row into a CPU smoke run on the shapes dataset.

    ResNet-18 from scratch, 64-channel FPN and heads, 128-192 px images, at most 1000
    anchors per level before and 500 / 200 proposals after the RPN's NMS, 2 images per
    iteration on one process, ``iterations`` SGD steps with a checkpoint every quarter of
    them, evaluation on ``shapes_val`` at the end keeping the 50 best detections per image
    whatever their score. The row's own
    components (heads, matchers, samplers, losses, norms, pooled levels, anchors) are kept.
    The overrides are the same for every row; :func:`shapes_smoke_row_opts` adds what a row's
    meta-architecture needs.

    Raises:
        ValueError: ``iterations`` < 4.
    """
    if iterations < 4:
        raise ValueError(f"--smoke-iters={iterations}; expected at least 4.")
    return [
        "MODEL.DEVICE", "cpu",
        "MODEL.WEIGHTS", "",
        "MODEL.PIXEL_STD", "[57.375, 57.120, 58.395]",
        "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.FPN.OUT_CHANNELS", "64",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "1000",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "500",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "200",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(SHAPES_NUM_CLASSES),
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
        "MODEL.SEPH.BOX_HEAD.CONV_DIM", "64",
        "MODEL.SEPH.BOX_HEAD.FC_DIM", "128",
        "MODEL.SEPH.BOX_HEAD.BRANCH_CONV_DIM", "64",
        "DATASETS.TRAIN", "('shapes_train',)",
        "DATASETS.TEST", "('shapes_val',)",
        "DATALOADER.NUM_WORKERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "(128,)",
        "INPUT.MAX_SIZE_TRAIN", "192",
        "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "192",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.REFERENCE_WORLD_SIZE", "0",
        "SOLVER.BASE_LR", "0.005",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.WARMUP_ITERS", str(iterations // 4),
        "SOLVER.STEPS", f"({iterations * 3 // 4},)",
        "SOLVER.CHECKPOINT_PERIOD", str(max(1, iterations // 4)),
        "TEST.EVAL_PERIOD", "0",
        "TEST.DETECTIONS_PER_IMAGE", "50",
        "SEED", "42",
    ]


def shapes_smoke_row_opts(rows: Sequence[AblationRow], iterations: int) -> Dict[str, List[str]]:
    """Each row's overrides for a shapes smoke run: ``{row id: shapes_smoke_opts(iterations) +
    the row's row_model_opts with the shapes' class count}`` (see
    :func:`~sephnet.tools.proxy.row_model_opts`; e.g. a dense detector's
    ``MODEL.RETINANET.NUM_CLASSES``).

    Raises:
        ValueError: ``iterations`` < 4, a row has no config, or a row cannot run at CPU scale
            (naming it).
    """
    common = shapes_smoke_opts(iterations)
    opts = {}
    for row in rows:
        if not row.runnable:
            raise ValueError(f"row {row.id!r} is pending ({row.pending}); it has no config.")
        try:
            opts[row.id] = common + row_model_opts(row.config, SHAPES_NUM_CLASSES)
        except ValueError as e:
            raise ValueError(f"row {row.id!r} cannot run under --shapes-smoke: {e}") from None
    return opts


def run_state(run_dir: str) -> str:
    """``"finished"`` (``final_metrics.json`` exists), ``"interrupted"`` (a
    ``last_checkpoint`` exists) or ``"new"``."""
    if os.path.isfile(os.path.join(run_dir, FINAL_METRICS)):
        return "finished"
    if os.path.isfile(os.path.join(run_dir, "last_checkpoint")):
        return "interrupted"
    return "new"


def build_command(
    train_net: str,
    config: str,
    run_dir: str,
    *,
    num_gpus: int,
    resume: bool,
    opts: Sequence[str],
) -> List[str]:
    """The ``train_net.py`` command line of one run (``opts``: KEY VALUE pairs, last wins)."""
    cmd = [sys.executable, train_net, "--config-file", config, "--num-gpus", str(num_gpus)]
    if resume:
        cmd.append("--resume")
    return cmd + ["OUTPUT_DIR", run_dir, *opts]


def _last_evaluation(run_dir: str) -> Dict[str, List[Optional[float]]]:
    """Per task, the log's 12 columns from the last metrics.json entry that has the task's
    AP (detectron2 stores percent; the log fractions). AR columns are None there."""
    path = os.path.join(run_dir, "metrics.json")
    found: Dict[str, List[Optional[float]]] = {}
    if not os.path.isfile(path):
        return found
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            for task in _TASKS:
                if f"{task}/AP" in entry:
                    aps = [entry.get(f"{task}/{k}") for k in _D2_AP_KEYS]
                    found[task] = [None if v is None else v / 100.0 for v in aps] + [None] * 6
    return found


def _gt_json(run_dir: str) -> Optional[str]:
    """The COCO json of the run's first test dataset: its registered ``json_file``, else
    the COCOEvaluator's conversion cached in ``inference/``."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        return None
    with open(config_path, encoding="utf-8") as f:
        tests = (yaml.safe_load(f).get("DATASETS") or {}).get("TEST") or []
    if not tests:
        return None
    name = tests[0]
    cached = os.path.join(run_dir, "inference", f"{name}_coco_format.json")
    if os.path.isfile(cached):
        return cached
    import sephnet.data  # noqa: F401  (registers the shapes datasets)
    from sephnet.backend import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        json_file = getattr(MetadataCatalog.get(name), "json_file", None)
        if json_file and os.path.isfile(json_file):
            return json_file
    return None


def _coco_stats(run_dir: str, tasks: Sequence[str]) -> Dict[str, List[Optional[float]]]:
    """All 12 COCO numbers of each of ``tasks``, recomputed with pycocotools from the run's
    ``inference/coco_instances_results.json`` (detectron2 reports only the six APs)."""
    results_path = os.path.join(run_dir, "inference", "coco_instances_results.json")
    gt_path = _gt_json(run_dir) if os.path.isfile(results_path) else None
    if gt_path is None:
        return {}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    stats: Dict[str, List[Optional[float]]] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        for task in tasks:
            # Fresh copies: loadRes adds fields (a box result gets a polygon "segmentation").
            if task == "segm":
                # loadRes derives a mask result's box and area from the mask; without the box
                # key it takes that route.
                task_results = [{k: v for k, v in r.items() if k != "bbox"}
                                for r in results if "segmentation" in r]
            else:
                task_results = [dict(r) for r in results]
            if not task_results:
                continue
            evaluator = COCOeval(gt, gt.loadRes(task_results), task)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            # COCOeval writes -1 where a column has no ground truth (e.g. no small objects).
            stats[task] = [None if v < 0 else float(v) for v in evaluator.stats]
    return stats


def collect_metrics(run_dir: str) -> Dict[str, List[Optional[float]]]:
    """A finished run's final metrics in the log's layout.

    Returns:
        ``{task: 12 values in LOG_COLUMNS order}`` for each task ("bbox", "segm") the run
        evaluated, as fractions like the log. The task list and the six APs come from the
        last evaluation entry of ``metrics.json``; all 12 numbers are recomputed from
        ``inference/coco_instances_results.json`` with pycocotools when that file and the
        test set's COCO json are found (else the AR columns are None). Missing values are
        None.
    """
    final = _last_evaluation(run_dir)
    final.update(_coco_stats(run_dir, sorted(final)) if final else {})
    return final


def _final_metrics_ok(metrics: Dict[str, List[Optional[float]]]) -> bool:
    bbox = metrics.get("bbox")
    return bbox is not None and len(bbox) == len(LOG_COLUMNS)


class _Runner:
    """Runs rows and remembers live child processes so an interrupt can stop them."""

    def __init__(self, train_net: str, output_root: str, num_gpus: int):
        self.train_net, self.output_root, self.num_gpus = train_net, output_root, num_gpus
        self._live: List[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._stopping = False  # set by stop_all: no new child starts after it

    def run(self, row: AblationRow, env: Optional[Dict[str, str]] = None, gpus: int = 0,
            run_dir: Optional[str] = None, opts: Sequence[str] = ()) -> str:
        """Train/evaluate one row unless finished; returns "finished", "done" or "failed".

        ``run_dir`` (default ``<output_root>/<row id>``) and ``opts`` (its KEY VALUE config
        overrides) name one run of the row; its wall and CPU time accumulate in
        ``timing.json``."""
        run_dir = run_dir or os.path.join(self.output_root, row.id)
        name = os.path.relpath(run_dir, self.output_root)
        state = run_state(run_dir)
        if state == "finished":
            print(f"[ablate] {name}: finished earlier, skipped", flush=True)
            return "finished"
        os.makedirs(run_dir, exist_ok=True)
        cmd = build_command(
            self.train_net,
            row.config,
            run_dir,
            num_gpus=gpus or self.num_gpus,
            resume=state == "interrupted",
            opts=opts,
        )
        verb = "resuming" if state == "interrupted" else "starting"
        print(f"[ablate] {name}: {verb} ({row.label})", flush=True)
        with open(os.path.join(run_dir, "ablate.log"), "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            start = time.monotonic()
            with self._lock:
                if self._stopping:
                    return "failed"
                child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                self._live.append(child)
            code, cpu_s = _wait_with_cpu_time(child)
            with self._lock:
                self._live.remove(child)
        _add_timing(run_dir, time.monotonic() - start, cpu_s)
        if code != 0:
            print(f"[ablate] {name}: train_net exited with {code}; see {run_dir}/ablate.log",
                  flush=True)
            return "failed"
        metrics = collect_metrics(run_dir)
        if not _final_metrics_ok(metrics):
            print(f"[ablate] {name}: no bbox evaluation in {run_dir}/metrics.json", flush=True)
            return "failed"
        with open(os.path.join(run_dir, FINAL_METRICS), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
        ap = metrics["bbox"][0]
        print(f"[ablate] {name}: done, bbox mAP {_fmt(ap)}", flush=True)
        return "done"

    def stop_all(self) -> None:
        """Terminate every running child (their checkpoints stay for a resume)."""
        with self._lock:
            self._stopping = True
            children = list(self._live)
        for child in children:
            child.terminate()
        for child in children:
            self._wait_for_exit(child)

    def _wait_for_exit(self, child: subprocess.Popen, grace_s: float = 2.0) -> None:
        """Wait until ``child`` has exited. The thread running it reaps it (and so reads its
        CPU time for ``timing.json``); only a child nobody else waits for (its run was
        interrupted in this thread) is reaped here, after ``grace_s``."""
        if hasattr(os, "waitid"):
            with contextlib.suppress(ChildProcessError):  # ChildProcessError: already reaped
                os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                with self._lock:
                    if child not in self._live:
                        return
                time.sleep(0.02)
        child.wait()


def _wait_with_cpu_time(child: subprocess.Popen) -> Tuple[int, float]:
    """Wait for ``child``; returns its exit code and the user + system CPU seconds it and
    its reaped descendants used (``os.wait4``, which reaps it: the returncode is set here)."""
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except ChildProcessError:  # reaped by stop_all after its grace period: no usage left
        return child.wait(), 0.0
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_utime + usage.ru_stime


def _add_timing(run_dir: str, wall_s: float, cpu_s: float) -> None:
    """Add one attempt's times to ``<run_dir>/timing.json`` (attempts of a resumed run sum)."""
    path = os.path.join(run_dir, TIMING)
    timing = {"wall_s": 0.0, "cpu_s": 0.0, "attempts": 0}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            timing.update(json.load(f))
    timing = {"wall_s": round(timing["wall_s"] + wall_s, 1), "cpu_s": round(timing["cpu_s"] + cpu_s, 1),
              "attempts": timing["attempts"] + 1}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(timing, f)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def run_rows(
    rows: Sequence[AblationRow],
    output_root: str,
    *,
    train_net: str = "train_net.py",
    num_gpus: int = 1,
    parallel_gpus: bool = False,
    opts: Sequence[str] = (),
    row_opts: Optional[Dict[str, List[str]]] = None,
) -> Dict[str, str]:
    """Run rows and write the results table of those with final metrics.

    Args:
        rows: runnable rows (with a config).
        output_root: parent of the run folders ``<output_root>/<row.id>``.
        train_net: path of ``train_net.py`` (run with this Python).
        num_gpus: sequential mode: ``--num-gpus`` of each run. Parallel mode: how many rows
            run at once, each on one GPU (``CUDA_VISIBLE_DEVICES`` = its slot 0..N-1).
        parallel_gpus: one row per GPU instead of one row after the other.
        opts: KEY VALUE config overrides added to every run.
        row_opts: ``{row id: KEY VALUE overrides}`` put before ``opts`` in that row's run
            (e.g. :func:`shapes_smoke_row_opts`); a row not in it gets ``opts`` only.

    Returns:
        ``{row id: "finished" (skipped) | "done" | "failed"}``.

    Raises:
        ValueError: a row has no config or ``num_gpus`` < 1.
        KeyboardInterrupt: after stopping the running children (their folders resume).
    """
    if num_gpus < 1:
        raise ValueError(f"--num-gpus={num_gpus}; expected >= 1.")
    for row in rows:
        if not row.runnable:
            raise ValueError(f"row {row.id!r} is pending ({row.pending}); it has no config.")
    runner = _Runner(train_net, output_root, num_gpus)
    row_opts = row_opts or {}

    def run(row: AblationRow, **kwargs) -> str:
        return runner.run(row, opts=row_opts.get(row.id, []) + list(opts), **kwargs)

    status: Dict[str, str] = {}
    try:
        if parallel_gpus and num_gpus > 1:
            slots: "queue.Queue[int]" = queue.Queue()
            for gpu in range(num_gpus):
                slots.put(gpu)

            def on_a_gpu(row: AblationRow) -> str:
                gpu = slots.get()
                try:
                    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
                    return run(row, env=env, gpus=1)
                finally:
                    slots.put(gpu)

            with ThreadPoolExecutor(max_workers=num_gpus) as pool:
                for row, result in zip(rows, pool.map(on_a_gpu, rows)):
                    status[row.id] = result
        else:
            for row in rows:
                status[row.id] = run(row)
    except KeyboardInterrupt:
        runner.stop_all()
        raise
    finally:
        _write_table(rows, output_root)
    return status


def proxy_runs(rows: Sequence[AblationRow], output_root: str, *, iterations: int, seeds: int,
               opts: Sequence[str] = (), weights: str = "") -> List[Tuple[AblationRow, str, List[str]]]:
    """The runs of a proxy study: ``(row, run folder, config overrides)`` for seeds
    ``0..seeds-1`` of each row, seed-major (seed 0 of every row first, so a study stopped
    early still covers every row). Overrides: :func:`~sephnet.tools.proxy.proxy_opts` with
    the run's seed, the row's anchors x ``ANCHOR_SCALE`` and ``weights`` (the pretrained
    backbone, or "" for none), the row's :func:`~sephnet.tools.proxy.row_model_opts`, then
    ``opts`` (last wins).

    Raises:
        ValueError: ``seeds`` < 1, ``iterations`` < 10, a row has no config, or a row cannot
            run at proxy scale (naming it).
    """
    if seeds < 1:
        raise ValueError(f"--seeds={seeds}; expected >= 1.")
    for row in rows:
        if not row.runnable:
            raise ValueError(f"row {row.id!r} is pending ({row.pending}); it has no config.")
    anchors = {row.id: scaled_anchor_sizes(row_anchor_sizes(row.config)) for row in rows}
    model_opts = {}
    for row in rows:
        try:
            model_opts[row.id] = row_model_opts(row.config, PROXY_NUM_CLASSES)
        except ValueError as e:
            raise ValueError(f"row {row.id!r} cannot run under --proxy: {e}") from None
    return [
        (row, os.path.join(output_root, row.id, f"seed{seed}"),
         proxy_opts(iterations, seed, anchors[row.id], weights) + model_opts[row.id] + list(opts))
        for seed in range(seeds) for row in rows
    ]


def _without_key(opts: Sequence[str], key: str) -> List[str]:
    """KEY VALUE pairs ``opts`` without ``key``'s pair."""
    return [v for k, val in zip(opts[::2], opts[1::2]) if k != key for v in (k, val)]


def run_proxy_study(
    rows: Sequence[AblationRow],
    output_root: str,
    *,
    iterations: int,
    seeds: int,
    parallel: int = 1,
    pretrain_config: str = "",
    pretrain_iterations: int = PRETRAIN_ITERATIONS,
    train_net: str = "train_net.py",
    opts: Sequence[str] = (),
    command: str = "",
) -> Dict[str, str]:
    """Run a proxy study (see the module docstring) and write its results.

    Args:
        rows: runnable rows, in the order of the tables.
        output_root: the study's folder.
        iterations, seeds: the proxy schedule's length and the seeds per row.
        parallel: trainings at once; each gets ``max(1, cpu_count // parallel)`` threads.
        pretrain_config: the config of the backbone pretraining run (the quickstart's), run
            first into ``<output_root>/_pretrain/`` with all the CPU threads and
            :func:`~sephnet.tools.proxy.pretrain_opts`; its ResNet weights
            (``_pretrain/backbone.pth``) are every row's ``MODEL.WEIGHTS``. "" or
            ``pretrain_iterations`` 0: rows train from scratch.
        pretrain_iterations: iterations of the pretraining run.
        train_net: path of ``train_net.py``.
        opts: KEY VALUE overrides added after the proxy's (not to the pretraining).
        command: the command line, recorded in ``proxy.json`` and ``results.md``.

    Returns:
        ``{"<row id>/seed<k>": "finished" | "done" | "failed"}``, and ``"_pretrain"``'s
        status when there is a pretraining (the rows do not run when it failed).

    Raises:
        ValueError: as :func:`proxy_runs`, ``parallel`` < 1, ``pretrain_iterations`` < 0, or
            a pretraining config that does not exist.
        KeyboardInterrupt: after stopping the running children (their folders resume).
    """
    if parallel < 1:
        raise ValueError(f"--parallel={parallel}; expected >= 1.")
    if pretrain_iterations < 0:
        raise ValueError(f"--pretrain-iters={pretrain_iterations}; expected >= 0.")
    pretrain = bool(pretrain_config) and pretrain_iterations > 0
    if pretrain and not os.path.isfile(pretrain_config):
        raise ValueError(f"--pretrain-config {pretrain_config!r} does not exist.")
    pretrain_dir = os.path.join(output_root, PRETRAIN_DIR)
    weights = os.path.abspath(os.path.join(pretrain_dir, BACKBONE_WEIGHTS)) if pretrain else ""
    runs = proxy_runs(rows, output_root, iterations=iterations, seeds=seeds, opts=opts,
                      weights=weights)
    os.makedirs(output_root, exist_ok=True)
    settings = {
        "command": command,
        "rows": [r.id for r in rows],
        "iterations": iterations,
        "seeds": seeds,
        "anchor_scale": ANCHOR_SCALE,
        # SEED is per run; the weights' path is the study's own
        "overrides": _without_key(proxy_opts(iterations, 0, weights=BACKBONE_WEIGHTS if pretrain else ""),
                                  "SEED"),
        "user_opts": list(opts),
    }
    if pretrain:
        settings["pretrain"] = {"config": os.path.relpath(pretrain_config),
                                "iterations": pretrain_iterations, "seed": PRETRAIN_SEED,
                                "folder": PRETRAIN_DIR}
    with open(os.path.join(output_root, PROXY_SETTINGS), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1)
    runner = _Runner(train_net, output_root, 1)
    status: Dict[str, str] = {}
    if pretrain:
        status[PRETRAIN_DIR] = _pretrain_backbone(runner, pretrain_config, pretrain_dir,
                                                  pretrain_iterations)
        if status[PRETRAIN_DIR] == "failed":
            return status
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)

    def one(run: Tuple[AblationRow, str, List[str]]) -> str:
        row, run_dir, run_opts = run
        return runner.run(row, env=env, run_dir=run_dir, opts=run_opts)

    pool = ThreadPoolExecutor(max_workers=parallel)
    try:
        for (row, run_dir, _), result in zip(runs, pool.map(one, runs)):
            status[os.path.relpath(run_dir, output_root)] = result
    except KeyboardInterrupt:
        runner.stop_all()  # before the pool's shutdown, which waits for the running runs
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        metrics, timings = load_seed_metrics(rows, output_root)
        if metrics:
            paths = write_proxy_results(rows, metrics, output_root, settings, timings)
            print(f"[ablate] wrote {' and '.join(paths)}", flush=True)
    return status


def _pretrain_backbone(runner: "_Runner", config: str, run_dir: str, iterations: int) -> str:
    """Run (or skip, or resume) the pretraining in ``run_dir`` and write its
    ``BACKBONE_WEIGHTS`` from ``model_final.pth``; returns the run's status."""
    row = AblationRow(id=PRETRAIN_DIR, label="backbone pretraining", table="extra",
                      config=os.path.abspath(config), pending=None, confidence="",
                      changes="the proxy's stand-in for ImageNet pretraining")
    result = runner.run(row, run_dir=run_dir, opts=pretrain_opts(iterations))
    weights = os.path.join(run_dir, BACKBONE_WEIGHTS)
    if result != "failed" and not os.path.isfile(weights):
        count = extract_backbone(os.path.join(run_dir, "model_final.pth"), weights)
        print(f"[ablate] {PRETRAIN_DIR}: wrote {weights} ({count} tensors)", flush=True)
    return result


def _write_table(rows: Sequence[AblationRow], output_root: str) -> None:
    measured = load_measured(rows, output_root)
    if measured:
        table, chart = write_results(rows, measured, output_root)
        print(f"[ablate] wrote {table} and {chart}", flush=True)


def _raise_keyboard_interrupt(signum, frame) -> None:
    # SIGTERM stops the runs like Ctrl-C does: children are terminated, folders resume.
    raise KeyboardInterrupt


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sephnet.tools.ablate``."""
    parser = argparse.ArgumentParser(
        prog="python -m sephnet.tools.ablate",
        description="Run experiment-log rows through train_net.py; resume interrupted rows, "
        "skip finished ones, and tabulate the results beside the log's.",
    )
    parser.add_argument("--rows", nargs="+", required=True, metavar="ROW",
                        help="row ids, labels or globs of them (see the index); @log: every "
                        "row of the log, @extras: every extra")
    parser.add_argument("--index", default=os.path.join("configs", "coco", "ablations.yaml"),
                        help="the ablation index (default: %(default)s)")
    parser.add_argument("--output-root", default=None,
                        help="parent of the run folders (default: output/ablations, "
                        "output/ablations-shapes with --shapes-smoke, output/ablations-proxy "
                        "with --proxy)")
    parser.add_argument("--train-net", default="train_net.py",
                        help="path of train_net.py (default: %(default)s)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="GPUs per run; with --parallel-gpus, rows run at once")
    parser.add_argument("--parallel-gpus", action="store_true",
                        help="run one row per GPU, --num-gpus rows at a time")
    parser.add_argument("--shapes-smoke", action="store_true",
                        help="CPU smoke run: shapes dataset, ResNet-18, tiny sizes, "
                        "--smoke-iters iterations (overrides come before --opts)")
    parser.add_argument("--smoke-iters", type=int, default=20,
                        help="iterations of a --shapes-smoke run (default: %(default)s)")
    parser.add_argument("--proxy", action="store_true",
                        help="proxy study: the same CPU-sized overrides on every row (clutter "
                        "dataset, ResNet-18, --proxy-iters iterations), --seeds seeds each")
    parser.add_argument("--proxy-iters", type=int, default=PROXY_ITERATIONS,
                        help="iterations of a --proxy run (default: %(default)s)")
    parser.add_argument("--pretrain-config",
                        default=os.path.join("configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml"),
                        help="with --proxy: the backbone pretraining's config (default: %(default)s)")
    parser.add_argument("--pretrain-iters", type=int, default=PRETRAIN_ITERATIONS,
                        help="with --proxy: iterations of the backbone pretraining, run once "
                        "before the rows; 0: rows train from scratch (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="with --proxy: seeds per row, run folders seed0..seedN-1")
    parser.add_argument("--parallel", type=int, default=1,
                        help="with --proxy: CPU trainings at once (default: %(default)s)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides for every run")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status (0: every row finished, 1: a row
    failed, 130: interrupted by Ctrl-C or SIGTERM)."""
    args = argument_parser().parse_args(argv)
    if len(args.opts) % 2:
        raise SystemExit(f"--opts needs KEY VALUE pairs, got {args.opts!r}.")
    if args.proxy and args.shapes_smoke:
        raise SystemExit("--proxy and --shapes-smoke exclude each other.")
    try:
        rows = select_rows(load_index(args.index), args.rows)
        smoke = shapes_smoke_row_opts(rows, args.smoke_iters) if args.shapes_smoke else None
    except ValueError as e:
        raise SystemExit(str(e)) from None
    root = args.output_root or os.path.join(
        "output",
        "ablations-proxy" if args.proxy else "ablations-shapes" if args.shapes_smoke else "ablations",
    )
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.proxy:
            args_line = shlex.join(sys.argv[1:] if argv is None else list(argv))
            command = f"python -m sephnet.tools.ablate {args_line}"
            status = run_proxy_study(rows, root, iterations=args.proxy_iters, seeds=args.seeds,
                                     parallel=args.parallel,
                                     pretrain_config=args.pretrain_config,
                                     pretrain_iterations=args.pretrain_iters,
                                     train_net=args.train_net,
                                     opts=args.opts, command=command)
        else:
            status = run_rows(rows, root, train_net=args.train_net, num_gpus=args.num_gpus,
                              parallel_gpus=args.parallel_gpus, opts=args.opts, row_opts=smoke)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    except KeyboardInterrupt:
        print("[ablate] interrupted; running the same command again resumes", flush=True)
        return 130
    failed = sorted(k for k, v in status.items() if v == "failed")
    if failed:
        print(f"[ablate] failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
