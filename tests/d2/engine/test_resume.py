"""Exact resume: a run killed after checkpoint k and resumed equals an uninterrupted run.

The tiny model draws random numbers in its forward (dropout, noise) and the mapper
augments with numpy/torch/python randomness, in the main process (NUM_WORKERS 0) or in
worker processes (NUM_WORKERS 2); the loader groups by aspect ratio.
"""
import random

import numpy as np
import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.data import build_detection_train_loader
from sephnet.d2.engine import DefaultTrainer, HookBase
from sephnet.d2.utils.env import seed_all_rng


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        y = torch.tensor([d["y"] for d in batch])
        fit = ((self.fc(self.drop(x)).squeeze(1) - y) ** 2).mean()
        return {"loss_fit": fit, "loss_noise": 0.01 * torch.rand(()) * self.fc.weight.abs().sum()}


def _mapper(d):
    x = torch.tensor(d["x"]) + 0.1 * torch.randn(4) + float(np.random.rand()) + random.random()
    return {"x": x, "y": float(d["y"]), "width": d["width"], "height": d["height"]}


def _dataset():
    g = np.random.RandomState(0)
    return [
        {"x": g.rand(4).tolist(), "y": float(i % 3), "width": 10 + 5 * (i % 2), "height": 12, "image_id": i}
        for i in range(10)
    ]


class _Trainer(DefaultTrainer):
    @classmethod
    def build_model(cls, cfg):
        return _Net()

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(
            _dataset(), mapper=_mapper, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )


class _Record(HookBase):
    def __init__(self, losses, kill_at=None):
        self.losses, self.kill_at = losses, kill_at

    def after_step(self):
        self.losses[self.trainer.iter] = self.trainer.storage.history("total_loss").latest()
        if self.trainer.iter == self.kill_at:
            raise KeyboardInterrupt("simulated kill")


def _cfg(out, workers):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(out)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.MAX_ITER = 9
    cfg.SOLVER.STEPS = (6,)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.DATASETS.TEST = ()
    return cfg


def _train(cfg, seed, *, resume, kill_at=None):
    seed_all_rng(seed)
    trainer = _Trainer(cfg)
    losses = {}
    trainer.register_hooks([_Record(losses, kill_at)])
    trainer.resume_or_load(resume=resume)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return trainer, losses, weights


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path, workers):
    _, full_losses, full_weights = _train(_cfg(tmp_path / "full", workers), 1, resume=False)
    assert sorted(full_losses) == list(range(9))

    cfg = _cfg(tmp_path / "killed", workers)
    _, first_losses, _ = _train(cfg, 1, resume=False, kill_at=6)
    assert sorted(first_losses) == list(range(7))
    assert (tmp_path / "killed" / "last_checkpoint").read_text().strip() == "model_0000005.pth"

    # A new process would start from other RNG states: use another seed.
    resumed, later_losses, resumed_weights = _train(cfg, 99, resume=True)
    assert resumed.start_iter == 6
    assert sorted(later_losses) == [6, 7, 8]
    for it in (6, 7, 8):
        assert later_losses[it] == full_losses[it], it
    for key, value in full_weights.items():
        assert torch.equal(value, resumed_weights[key]), key
    for it in range(6):
        assert first_losses[it] == full_losses[it]


def test_resume_without_checkpoint_loads_weights_and_starts_at_zero(tmp_path):
    cfg = _cfg(tmp_path, 0)
    trainer = _Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 0
