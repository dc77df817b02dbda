"""Event writers for Weights & Biases and MLflow, beside detectron2's TensorBoard writer.

Each writer sends the scalars newer than its last write (median-smoothed where the storage's
smoothing hint asks, as ``TensorboardXWriter`` does) with their iteration as the step, and the
run's config once at the start. The libraries are imported when a writer is built, so neither
is a dependency of sephnet. :func:`build_tracking_writers` returns the writers the config
switches on (``MODEL.SEPH.TRACKING``); ``train_net.py`` adds them to detectron2's writers.
"""
import importlib
from typing import Any, Dict, List

from sephnet.backend import CfgNode, events, get_event_storage

__all__ = ["WandbWriter", "MLflowWriter", "flatten_config", "build_tracking_writers"]


def flatten_config(cfg: CfgNode, prefix: str = "") -> Dict[str, Any]:
    """{"MODEL.RPN.NMS_THRESH": 0.7, ...}: every leaf key of ``cfg`` with its value."""
    flat: Dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, CfgNode):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


class _ScalarWriter(events.EventWriter):
    """Sends each scalar once, at its iteration: subclasses implement :meth:`_log`."""

    def __init__(self, window_size: int = 20):
        self._window_size = window_size
        self._last_write = -1

    def _log(self, scalars: Dict[str, float], step: int) -> None:
        raise NotImplementedError

    def write(self) -> None:
        storage = get_event_storage()
        by_step: Dict[int, Dict[str, float]] = {}
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                by_step.setdefault(itr, {})[name] = float(value)
        for step in sorted(by_step):
            self._log(by_step[step], step)
        if by_step:
            self._last_write = max(by_step)


class WandbWriter(_ScalarWriter):
    """Logs to a Weights & Biases run (``wandb.init(project, name, config)``)."""

    def __init__(self, cfg: CfgNode, window_size: int = 20):
        super().__init__(window_size)
        self._wandb = importlib.import_module("wandb")
        node = cfg.MODEL.SEPH.TRACKING.WANDB
        self._run = self._wandb.init(project=node.PROJECT, name=node.NAME or None,
                                     config=flatten_config(cfg), dir=cfg.OUTPUT_DIR)

    def _log(self, scalars: Dict[str, float], step: int) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


class MLflowWriter(_ScalarWriter):
    """Logs to an MLflow run of experiment ``EXPERIMENT`` at ``TRACKING_URI``; config keys
    become run parameters."""

    def __init__(self, cfg: CfgNode, window_size: int = 20):
        super().__init__(window_size)
        self._mlflow = importlib.import_module("mlflow")
        node = cfg.MODEL.SEPH.TRACKING.MLFLOW
        if node.TRACKING_URI:
            self._mlflow.set_tracking_uri(node.TRACKING_URI)
        self._mlflow.set_experiment(node.EXPERIMENT)
        self._mlflow.start_run()
        # MLflow caps parameter values at a few hundred characters
        self._mlflow.log_params({k: str(v)[:250] for k, v in flatten_config(cfg).items()})

    def _log(self, scalars: Dict[str, float], step: int) -> None:
        # MLflow metric names may not contain some characters detectron2 uses ("bbox/AP")
        self._mlflow.log_metrics({k.replace("/", "_"): v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self._mlflow.end_run()


def build_tracking_writers(cfg: CfgNode) -> List[events.EventWriter]:
    """The writers ``MODEL.SEPH.TRACKING`` enables (none by default)."""
    writers: List[events.EventWriter] = []
    if cfg.MODEL.SEPH.TRACKING.WANDB.ENABLED:
        writers.append(WandbWriter(cfg))
    if cfg.MODEL.SEPH.TRACKING.MLFLOW.ENABLED:
        writers.append(MLflowWriter(cfg))
    return writers
