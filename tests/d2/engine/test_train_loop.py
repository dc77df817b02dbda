"""SimpleTrainer / TrainerBase: hook order, metrics, non-finite losses, state dicts."""
import itertools
import random

import numpy as np
import pytest
import torch
from torch import nn

from sephnet.d2.engine import AMPTrainer, HookBase, SimpleTrainer
from sephnet.d2.engine import train_loop
from sephnet.d2.engine.train_loop import get_rng_states, set_rng_states


class _LinearLoss(nn.Module):
    """y = w.x + b; loss dict {"loss_a": mean((y - t)^2), "loss_b": 0.1 * |w|^2}."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, batch):
        x, t = batch
        y = self.fc(x).squeeze(1)
        return {"loss_a": ((y - t) ** 2).mean(), "loss_b": 0.1 * (self.fc.weight**2).sum()}


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(4, 3, generator=g)
        yield x, x.sum(1)


class _Recorder(HookBase):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def before_train(self):
        self.log.append((self.name, "before_train", self.trainer.iter))

    def before_step(self):
        self.log.append((self.name, "before_step", self.trainer.iter))

    def after_backward(self):
        grad = self.trainer.model.fc.weight.grad
        self.log.append((self.name, "after_backward", grad is not None and bool(grad.abs().sum() > 0)))

    def after_step(self):
        self.log.append((self.name, "after_step", self.trainer.iter))

    def after_train(self):
        self.log.append((self.name, "after_train", self.trainer.iter))


def _trainer(data=None, lr=0.01):
    model = _LinearLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return SimpleTrainer(model, data if data is not None else _data(), opt)


def test_hooks_run_in_order_around_each_step():
    log = []
    trainer = _trainer()
    trainer.register_hooks([_Recorder(log, "a"), None, _Recorder(log, "b")])
    trainer.train(2, 4)
    expected = [("a", "before_train", 2), ("b", "before_train", 2)]
    for it in (2, 3):
        expected += [("a", "before_step", it), ("b", "before_step", it),
                     ("a", "after_backward", True), ("b", "after_backward", True),
                     ("a", "after_step", it), ("b", "after_step", it)]
    expected += [("a", "after_train", 4), ("b", "after_train", 4)]
    assert log == expected
    with pytest.raises(TypeError, match="HookBase"):
        trainer.register_hooks([object()])


def test_metrics_written_to_storage_and_training_reduces_loss():
    trainer = _trainer(lr=0.05)
    trainer.train(0, 30)
    hist = trainer.storage.histories()
    assert {"total_loss", "loss_a", "loss_b", "data_time"} <= set(hist)
    totals = [v for v, _ in hist["total_loss"].values()]
    parts = [a + b for (a, _), (b, _) in zip(hist["loss_a"].values(), hist["loss_b"].values())]
    assert totals == pytest.approx(parts)
    assert totals[-1] < totals[0] * 0.8


def test_single_tensor_loss_is_logged_as_total_loss():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return (self.w * x).sum()

    model = M()
    trainer = SimpleTrainer(model, itertools.repeat(torch.tensor([2.0])), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(0, 1)
    assert trainer.storage.history("total_loss").latest() == pytest.approx(2.0)
    assert "loss" not in trainer.storage.histories()


def test_non_finite_loss_raises_with_iteration_and_losses():
    def data():
        for i in itertools.count():
            x = torch.ones(4, 3)
            yield (x * float("nan") if i == 2 else x), x.sum(1)

    trainer = _trainer(data())
    log = []
    trainer.register_hooks([_Recorder(log, "a")])
    with pytest.raises(FloatingPointError, match=r"iteration=2!(.|\n)*loss_a"):
        trainer.train(0, 5)
    # after_train still runs when training fails.
    assert log[-1] == ("a", "after_train", 2)


def test_eval_mode_model_is_rejected():
    trainer = _trainer()
    trainer.model.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        trainer.train(0, 1)


class _Stateful(HookBase):
    def __init__(self):
        self.value = 0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_state_dict_round_trip_includes_hooks_optimizer_rng_and_data_position(monkeypatch):
    trainer = _trainer()
    hook = _Stateful()
    hook.value = 7
    trainer.register_hooks([hook])
    trainer.train(0, 3)
    state = trainer.state_dict()
    assert state["iteration"] == 3 and state["data_position"] == 3
    assert state["hooks"] == {"_Stateful": {"value": 7}}
    assert {"python", "numpy", "torch"} <= set(state["rng_states"])
    assert "momentum_buffer" in str(state["optimizer"]["state"])

    other = _trainer()
    other_hook = _Stateful()
    other.register_hooks([other_hook])
    other.load_state_dict(state)
    assert other.iter == 3 and other_hook.value == 7 and other._data_position == 3
    # The next batch of the restored trainer is the 4th of the stream.
    expected = list(itertools.islice(_data(), 4))[3]
    assert torch.equal(next(other._data_loader_iter)[0], expected[0])

    warnings = []
    monkeypatch.setattr(train_loop.logger, "warning", lambda msg, *a: warnings.append(msg % a))
    _trainer().load_state_dict({**state, "hooks": {"Missing": {"x": 1}}})
    assert any("Missing" in w for w in warnings)
    with pytest.raises(KeyError, match="iteration"):
        _trainer().load_state_dict({"optimizer": state["optimizer"]})


def test_rng_between_steps_does_not_change_training():
    """Random draws made by hooks between steps leave the trajectory unchanged."""

    class NoisyModel(_LinearLoss):
        def forward(self, batch):
            losses = super().forward(batch)
            losses["loss_a"] = losses["loss_a"] * (1 + 0.1 * torch.rand(()))
            return losses

    class Noise(HookBase):
        def after_step(self):
            torch.rand(5)

    def run(with_noise):
        torch.manual_seed(0)
        model = NoisyModel()
        trainer = SimpleTrainer(model, _data(), torch.optim.SGD(model.parameters(), lr=0.01))
        if with_noise:
            trainer.register_hooks([Noise()])
        trainer.train(0, 5)
        return model.fc.weight.detach().clone()

    assert torch.equal(run(False), run(True))


def test_rng_snapshot_round_trip_is_weights_only_loadable(tmp_path):
    torch.manual_seed(3)
    state = get_rng_states()
    path = tmp_path / "rng.pth"
    torch.save(state, path)
    first = (torch.rand(3), np.random.rand(2).tolist(), random.random())
    set_rng_states(torch.load(path, weights_only=True))
    second = (torch.rand(3), np.random.rand(2).tolist(), random.random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_amp_trainer_on_cpu_uses_bfloat16_autocast():
    seen = []

    class M(_LinearLoss):
        def forward(self, batch):
            x, t = batch
            y = self.fc(x)
            seen.append(y.dtype)
            return {"loss": ((y.float().squeeze(1) - t) ** 2).mean()}

    model = M()
    trainer = AMPTrainer(model, _data(), torch.optim.SGD(model.parameters(), lr=0.01))
    before = model.fc.weight.detach().clone()
    trainer.train(0, 2)
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert not torch.equal(before, model.fc.weight)
    assert "grad_scaler" in trainer.state_dict()
    with pytest.raises(ValueError, match="multi-device"):
        AMPTrainer(nn.DataParallel(M()), _data(), torch.optim.SGD(M().parameters(), lr=0.1))


class _PrefetchingLoader:
    """Not resumable: draws its items from the global numpy RNG, one item ahead."""

    def __iter__(self):
        pending = np.random.rand()
        while True:
            upcoming = np.random.rand()
            yield torch.tensor([pending], dtype=torch.float32)
            pending = upcoming


class _NoisyScalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return {"loss": ((self.w * x - torch.rand(1)) ** 2).sum()}


def _scalar_trainer(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = _NoisyScalar()
    return SimpleTrainer(model, _PrefetchingLoader(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))


def test_resume_with_a_non_resumable_loader_replays_the_data_stream():
    full = _scalar_trainer(0)
    full.train(0, 6)

    first = _scalar_trainer(0)
    first.train(0, 3)
    state = first.state_dict()
    assert "data_loader" not in state and state["data_position"] == 3

    resumed = _scalar_trainer(123)  # another process: other global RNG states
    resumed.model.load_state_dict(first.model.state_dict())  # the checkpointer's part
    resumed.load_state_dict(state)
    resumed.train(3, 6)
    assert torch.equal(full.model.w, resumed.model.w)
