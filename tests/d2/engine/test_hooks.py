"""Standard hooks driven by a SimpleTrainer on a tiny model."""
import json
import os

import pytest
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn

from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.engine import SimpleTrainer, hooks
from sephnet.d2.utils.events import JSONWriter


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return {"loss": self.fc(self.bn(x)).pow(2).mean()}


def _data():
    g = torch.Generator().manual_seed(1)
    while True:
        yield torch.randn(4, 2, generator=g) + 3.0


def _trainer(lr=0.1):
    model = _Model()
    return SimpleTrainer(model, _data(), torch.optim.SGD(model.parameters(), lr=lr))


def test_lr_scheduler_hook_records_lr_and_steps_a_param_scheduler():
    trainer = _trainer(lr=0.1)
    sched = MultiStepParamScheduler([1.0, 0.1], milestones=[3], num_updates=6)
    hook = hooks.LRScheduler(scheduler=sched)
    trainer.register_hooks([hook])
    trainer.train(0, 6)
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    assert hook.state_dict()["last_epoch"] == 6


def test_best_param_group_id():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    opt = torch.optim.SGD([{"params": [a], "lr": 2.0}, {"params": [b], "lr": 1.0},
                           {"params": [c], "lr": 1.0}], lr=1.0)
    assert hooks.LRScheduler.get_best_param_group_id(opt) == 1
    opt = torch.optim.SGD([{"params": [a], "lr": 2.0}, {"params": [b, c], "lr": 1.0}], lr=1.0)
    assert hooks.LRScheduler.get_best_param_group_id(opt) == 1


def test_eval_hook_period_and_final_and_flattening():
    calls = []

    def evaluate():
        calls.append(trainer.iter)
        return {"bbox": {"AP": 10.0 + len(calls)}, "n": 1}

    trainer = _trainer()
    trainer.register_hooks([hooks.EvalHook(3, evaluate)])
    trainer.train(0, 7)
    # after iterations 2 and 5, then at the end (iter == 7 after the loop)
    assert calls == [2, 5, 7]
    assert trainer.storage.history("bbox/AP").values()[-1][0] == 13.0
    assert trainer.storage.history("n").latest() == 1.0

    bad = _trainer()
    bad.register_hooks([hooks.EvalHook(0, lambda: {"x": "text"})])
    with pytest.raises(ValueError, match="'x'"):
        bad.train(0, 1)


def test_periodic_writer_and_iteration_timer(tmp_path):
    trainer = _trainer()
    path = os.path.join(tmp_path, "metrics.json")
    trainer.register_hooks([hooks.IterationTimer(warmup_iter=1), hooks.PeriodicWriter([JSONWriter(path)], period=4)])
    trainer.train(0, 10)
    lines = [json.loads(x) for x in open(path)]
    assert [x["iteration"] for x in lines] == [3, 7, 9]
    assert "time" in lines[-1] and "total_loss" in lines[-1]
    with pytest.raises(TypeError, match="EventWriter"):
        hooks.PeriodicWriter([object()])


def test_periodic_checkpointer_hook_names_and_contents(tmp_path):
    trainer = _trainer()
    ckpt = DetectionCheckpointer(trainer.model, str(tmp_path), trainer=trainer)
    trainer.register_hooks([hooks.PeriodicCheckpointer(ckpt, 2)])
    trainer.train(0, 5)
    names = sorted(os.listdir(tmp_path))
    assert names == ["last_checkpoint", "model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    data = torch.load(tmp_path / "model_0000003.pth", weights_only=True)
    assert data["iteration"] == 3
    assert data["trainer"]["data_position"] == 4 and "rng_states" in data["trainer"]
    assert open(tmp_path / "last_checkpoint").read().strip() == "model_final.pth"


def test_callback_hook_and_precise_bn():
    seen = []
    trainer = _trainer()
    trainer.register_hooks([
        hooks.CallbackHook(before_train=lambda t: seen.append("bt"), after_step=lambda t: seen.append(t.iter)),
        hooks.PreciseBN(0, trainer.model, _data(), num_iter=5),
    ])
    trainer.train(0, 2)
    assert seen == ["bt", 0, 1]
    # PreciseBN replaced the EMA statistics by the exact mean of its batches (about 3).
    assert torch.allclose(trainer.model.bn.running_mean, torch.full((2,), 3.0), atol=0.5)
    assert hooks.PreciseBN(0, nn.Linear(1, 1), _data(), 1)._disabled


def test_best_checkpointer_saves_only_improvements(tmp_path):
    values = iter([0.5, 0.4, 0.9])
    trainer = _trainer()
    ckpt = DetectionCheckpointer(trainer.model, str(tmp_path))
    best = hooks.BestCheckpointer(2, ckpt, "ap", mode="max")
    trainer.register_hooks([hooks.EvalHook(2, lambda: {"ap": next(values)}), best])
    trainer.train(0, 6)
    assert (best.best_metric, best.best_iter) == (0.9, 6)
    assert os.path.exists(tmp_path / "model_best.pth")
    with pytest.raises(ValueError, match="mode"):
        hooks.BestCheckpointer(1, ckpt, "ap", mode="up")
