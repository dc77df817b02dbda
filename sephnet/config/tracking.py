"""Keys of the optional experiment trackers: ``MODEL.SEPH.TRACKING.*``.

Weights & Biases and MLflow receive the same scalars as TensorBoard (losses, learning rate,
evaluation results) when switched on here. Both libraries are optional: they are imported only
by a run that enables them, and setup fails naming the key when the library is missing.
"""
import importlib.util

from sephnet.backend import CfgNode

__all__ = ["add_config", "validate_config"]

_KEY = "MODEL.SEPH.TRACKING"


def add_config(cfg: CfgNode) -> None:
    """Add ``MODEL.SEPH.TRACKING.{WANDB,MLFLOW}.*`` (both off)."""
    cfg.MODEL.SEPH.TRACKING = CfgNode()
    wandb = cfg.MODEL.SEPH.TRACKING.WANDB = CfgNode()
    # Log scalars and the config to a Weights & Biases run (needs `pip install wandb`;
    # where it logs to is wandb's own setting: `wandb login`, or WANDB_MODE=offline).
    wandb.ENABLED = False
    # The W&B project (a non-empty string when ENABLED).
    wandb.PROJECT = "sephnet"
    # The run's name; "" lets W&B pick one.
    wandb.NAME = ""
    mlflow = cfg.MODEL.SEPH.TRACKING.MLFLOW = CfgNode()
    # Log scalars and the flattened config to an MLflow run (needs `pip install mlflow`).
    mlflow.ENABLED = False
    # Where MLflow stores runs: a URI such as "file:./mlruns" or "http://host:5000";
    # "" keeps MLflow's default (MLFLOW_TRACKING_URI, else ./mlruns).
    mlflow.TRACKING_URI = ""
    # The MLflow experiment name (a non-empty string when ENABLED).
    mlflow.EXPERIMENT = "sephnet"


def validate_config(cfg: CfgNode) -> None:
    """An enabled tracker needs its library and a project/experiment name."""
    node = cfg.MODEL.SEPH.TRACKING
    for name, library, field in (("WANDB", "wandb", "PROJECT"), ("MLFLOW", "mlflow", "EXPERIMENT")):
        tracker = node[name]
        if not tracker.ENABLED:
            continue
        if importlib.util.find_spec(library) is None:
            raise ValueError(f"{_KEY}.{name}.ENABLED is True but {library} is not installed "
                             f"(pip install {library}).")
        if not str(tracker[field]).strip():
            raise ValueError(f"{_KEY}.{name}.{field} must be a non-empty name when "
                             f"{_KEY}.{name}.ENABLED is True.")
