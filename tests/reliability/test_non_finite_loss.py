"""Numerical faults: a NaN/inf loss stops DefaultTrainer with the iteration, the loss dict and the
last good checkpoint in the message, and the checkpoint files on disk stay finite."""
import os

import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.data import build_detection_train_loader
from sephnet.d2.engine import DefaultTrainer


class _BlowsUp(nn.Module):
    """A regression whose loss becomes ``value`` from iteration 4 on (counted by forward calls)."""

    def __init__(self, value: float):
        super().__init__()
        self.fc = nn.Linear(2, 1)
        self.value = value
        self.calls = 0

    def forward(self, batch):
        x = torch.tensor([d["x"] for d in batch])
        loss = (self.fc(x) ** 2).mean()
        if self.calls >= 4:
            loss = loss * self.value
        self.calls += 1
        return {"loss_fit": loss, "loss_other": 0.1 * loss.detach()}


def _trainer(tmp_path, value):
    class _Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            return _BlowsUp(value)

        @classmethod
        def build_train_loader(cls, cfg):
            data = [{"x": [float(i), 1.0], "width": 4, "height": 4, "image_id": i}
                    for i in range(4)]
            return build_detection_train_loader(data, mapper=lambda d: d, total_batch_size=2,
                                                num_workers=0)

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.DATASETS.TEST = ()
    return _Trainer(cfg)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_names_iteration_losses_and_last_good_checkpoint(tmp_path, value):
    trainer = _trainer(tmp_path, value)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    message = str(info.value)
    assert "iteration=4" in message
    assert "loss_fit" in message and "loss_other" in message
    assert f"Last good checkpoint: {os.path.join(str(tmp_path), 'model_0000003.pth')}" in message
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == [
        "model_0000001.pth", "model_0000003.pth"
    ]
    for name in ("model_0000001.pth", "model_0000003.pth"):
        for tensor in torch.load(tmp_path / name)["model"].values():
            assert torch.isfinite(tensor).all()


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
    trainer = _trainer(tmp_path, float("nan"))
    trainer.checkpointer.save_dir = ""  # nothing is ever written
    with pytest.raises(FloatingPointError, match="Last good checkpoint: none"):
        trainer.train()
