"""AtomicDetectionCheckpointer: a save that dies midway leaves the last complete checkpoint."""
import os

import pytest
import torch
from torch import nn

from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.engine import atomic_checkpointer
from sephnet.d2.engine.atomic_checkpointer import AtomicDetectionCheckpointer


class _Extra:
    def __init__(self):
        self.value = 1

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_save_load_round_trip_and_interrupted_save(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    extra = _Extra()
    ckpt = AtomicDetectionCheckpointer(model, str(tmp_path), extra=extra)
    assert isinstance(ckpt, DetectionCheckpointer)
    ckpt.save("model_0000000", iteration=0)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"

    def dying_save(data, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(atomic_checkpointer.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000001", iteration=1)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]

    other = nn.Linear(2, 2)
    other_extra = _Extra()
    other_extra.value = 5
    loader = AtomicDetectionCheckpointer(other, str(tmp_path), extra=other_extra)
    assert loader.has_checkpoint()
    left = loader.resume_or_load("", resume=True)
    assert left["iteration"] == 0 and other_extra.value == 1
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_nothing_written_without_save_dir_or_off_main(tmp_path):
    AtomicDetectionCheckpointer(nn.Linear(1, 1), "").save("x")
    AtomicDetectionCheckpointer(nn.Linear(1, 1), str(tmp_path), save_to_disk=False).save("x")
    assert os.listdir(tmp_path) == []
