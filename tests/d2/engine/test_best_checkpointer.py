"""BestCheckpointer: saves exactly when the tracked metric improves (max and min), at
EvalHook's cadence, skipping NaN/inf, missing metrics and interrupted runs."""
import logging
import math

import pytest
import torch
from torch import nn

from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.engine import SimpleTrainer, hooks


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        return {"loss": self.fc(x).pow(2).mean()}


def _trainer():
    def data():
        while True:
            yield torch.ones(4, 2)

    model = _Model()
    return SimpleTrainer(model, data(), torch.optim.SGD(model.parameters(), lr=0.1))


class _RecordingCheckpointer:
    def __init__(self):
        self.saves = []

    def save(self, name, **extra):
        self.saves.append((name, extra))


def _run(values, mode="max", period=2, max_iter=6, metric="bbox/AP"):
    """Train with an EvalHook returning ``values`` in turn; return (hook, saved iterations)."""
    trainer = _trainer()
    values = iter(values)
    ckpt = _RecordingCheckpointer()
    best = hooks.BestCheckpointer(period, ckpt, metric, mode=mode)
    trainer.register_hooks([hooks.EvalHook(period, lambda: {"bbox": {"AP": next(values)}}), best])
    trainer.train(0, max_iter)
    assert all(name == "model_best" for name, _ in ckpt.saves)
    return best, [extra["iteration"] for _, extra in ckpt.saves]


def test_max_mode_saves_first_and_improvements_only():
    # evaluations after iterations 1 and 3 (after_step) and at the end (after_train: 6)
    best, saved = _run([0.5, 0.4, 0.9])
    assert saved == [1, 6]
    assert (best.best_metric, best.best_iter) == (0.9, 6)


def test_min_mode_and_ties():
    best, saved = _run([0.5, 0.4, 0.9], mode="min")
    assert saved == [1, 3] and (best.best_metric, best.best_iter) == (0.4, 3)
    best, saved = _run([0.5, 0.5, 0.5])  # equal is not better
    assert saved == [1] and best.best_iter == 1


def test_non_finite_values_are_never_best():
    best, saved = _run([math.nan, math.inf, 0.2])
    assert saved == [6] and best.best_metric == 0.2
    best, saved = _run([0.3, math.nan, math.inf], mode="min")
    assert saved == [1] and best.best_metric == 0.3


def test_checks_follow_eval_hook_cadence_without_double_check_at_the_end():
    # period 2, 4 iterations: EvalHook runs after iteration 1 and in after_train only
    best, saved = _run([0.1, 0.2], period=2, max_iter=4)
    assert saved == [1, 4]
    # period 0: only the final evaluation
    best, saved = _run([0.7], period=0, max_iter=3)
    assert saved == [3]


def test_missing_metric_warns_and_saves_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        best, saved = _run([0.5, 0.6, 0.7], metric="segm/AP")
    assert saved == [] and best.best_metric is None
    assert any("segm/AP" in r.getMessage() for r in caplog.records)


def test_interrupted_training_is_not_checked():
    trainer = _trainer()
    ckpt = _RecordingCheckpointer()
    values = iter([0.5, 0.6])
    trainer.register_hooks([
        hooks.EvalHook(2, lambda: {"bbox": {"AP": next(values)}}),
        hooks.BestCheckpointer(2, ckpt, "bbox/AP"),
        hooks.CallbackHook(after_step=lambda t: 1 / 0 if t.iter == 2 else None),
    ])
    with pytest.raises(ZeroDivisionError):
        trainer.train(0, 6)
    assert [extra["iteration"] for _, extra in ckpt.saves] == [1]


def test_real_checkpointer_keeps_the_best_weights(tmp_path):
    trainer = _trainer()
    values = iter([0.5, 0.4, 0.3])
    snapshots = []
    trainer.register_hooks([
        hooks.EvalHook(2, lambda: {"bbox": {"AP": next(values)}}),
        hooks.CallbackHook(after_step=lambda t: snapshots.append(t.model.fc.weight.clone())),
        hooks.BestCheckpointer(2, DetectionCheckpointer(trainer.model, str(tmp_path)), "bbox/AP"),
    ])
    trainer.train(0, 6)
    data = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert data["iteration"] == 1
    torch.testing.assert_close(data["model"]["fc.weight"], snapshots[1])
    assert not torch.equal(data["model"]["fc.weight"], trainer.model.fc.weight)  # trained on


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode='up'; expected 'max' or 'min'"):
        hooks.BestCheckpointer(1, _RecordingCheckpointer(), "bbox/AP", mode="up")
