"""Weights & Biases / MLflow writers: off by default, refused without the library, and each
scalar sent once at its iteration (checked with stand-in modules that record the calls)."""
import importlib.machinery
import sys
import types

import pytest

from sephnet import validate_sephnet_config
from sephnet.backend import EventStorage, get_cfg
from sephnet.engine.tracking import build_tracking_writers, flatten_config


def _cfg(sephnet_cfg, tmp_path, **enabled):
    cfg = sephnet_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    for name, on in enabled.items():
        cfg.MODEL.SEPH.TRACKING[name].ENABLED = on
    return cfg


@pytest.fixture
def fake_trackers(monkeypatch):
    calls = []

    class Run:
        def log(self, scalars, step):
            calls.append(("wandb.log", dict(scalars), step))

        def finish(self):
            calls.append(("wandb.finish",))

    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: calls.append(("wandb.init", kw["project"], kw["name"],
                                            kw["config"]["SOLVER.BASE_LR"])) or Run()
    mlflow = types.ModuleType("mlflow")
    mlflow.set_tracking_uri = lambda uri: calls.append(("mlflow.uri", uri))
    mlflow.set_experiment = lambda name: calls.append(("mlflow.experiment", name))
    mlflow.start_run = lambda: calls.append(("mlflow.start",))
    mlflow.log_params = lambda params: calls.append(("mlflow.params", params["SOLVER.MAX_ITER"]))
    mlflow.log_metrics = lambda m, step: calls.append(("mlflow.metrics", dict(m), step))
    mlflow.end_run = lambda: calls.append(("mlflow.end",))
    for module in (wandb, mlflow):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    return calls


def test_no_tracker_by_default(tmp_path, sephnet_cfg):
    assert build_tracking_writers(_cfg(sephnet_cfg, tmp_path)) == []


def test_each_scalar_is_sent_once_at_its_iteration(tmp_path, fake_trackers, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, tmp_path, WANDB=True, MLFLOW=True)
    cfg.MODEL.SEPH.TRACKING.MLFLOW.TRACKING_URI = "file:" + str(tmp_path / "mlruns")
    validate_sephnet_config(cfg)
    wandb_writer, mlflow_writer = build_tracking_writers(cfg)
    with EventStorage(0) as storage:
        storage.put_scalar("loss", 2.0, smoothing_hint=False)
        wandb_writer.write(), mlflow_writer.write()
        storage.iter = 5
        storage.put_scalar("loss", 1.0, smoothing_hint=False)
        storage.put_scalar("bbox/AP", 40.0, smoothing_hint=False)
        wandb_writer.write(), mlflow_writer.write()
        wandb_writer.write(), mlflow_writer.write()  # nothing new: nothing sent
    wandb_writer.close(), mlflow_writer.close()
    assert fake_trackers == [
        ("wandb.init", "sephnet", None, cfg.SOLVER.BASE_LR),
        ("mlflow.uri", "file:" + str(tmp_path / "mlruns")),
        ("mlflow.experiment", "sephnet"),
        ("mlflow.start",),
        ("mlflow.params", str(cfg.SOLVER.MAX_ITER)),
        ("wandb.log", {"loss": 2.0}, 0),
        ("mlflow.metrics", {"loss": 2.0}, 0),
        ("wandb.log", {"loss": 1.0, "bbox/AP": 40.0}, 5),
        ("mlflow.metrics", {"loss": 1.0, "bbox_AP": 40.0}, 5),
        ("wandb.finish",),
        ("mlflow.end",),
    ]


def test_enabled_tracker_without_its_library_is_refused_naming_the_key(tmp_path, monkeypatch, sephnet_cfg):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"MODEL.SEPH.TRACKING.WANDB.ENABLED is True but wandb "
                                         r"is not installed \(pip install wandb\)"):
        validate_sephnet_config(_cfg(sephnet_cfg, tmp_path, WANDB=True))


def test_empty_experiment_name_is_refused(tmp_path, fake_trackers, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, tmp_path, MLFLOW=True)
    cfg.MODEL.SEPH.TRACKING.MLFLOW.EXPERIMENT = " "
    with pytest.raises(ValueError, match="MODEL.SEPH.TRACKING.MLFLOW.EXPERIMENT must be a "
                                         "non-empty name"):
        validate_sephnet_config(cfg)


def test_flatten_config_names_every_leaf_by_its_full_key():
    cfg = get_cfg()
    flat = flatten_config(cfg)
    assert flat["MODEL.RPN.NMS_THRESH"] == cfg.MODEL.RPN.NMS_THRESH
    assert "MODEL.RPN" not in flat
