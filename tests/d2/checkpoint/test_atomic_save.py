"""DetectionCheckpointer: a save that dies midway leaves the last complete checkpoint."""
import os

import pytest
import torch
from torch import nn

from sephnet.d2.checkpoint import DetectionCheckpointer
from sephnet.d2.checkpoint import detection_checkpoint


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
    ckpt = DetectionCheckpointer(model, str(tmp_path), extra=extra)
    ckpt.save("model_0000000", iteration=0)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"

    def dying_save(data, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(detection_checkpoint.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000001", iteration=1)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]

    other = nn.Linear(2, 2)
    other_extra = _Extra()
    other_extra.value = 5
    loader = DetectionCheckpointer(other, str(tmp_path), extra=other_extra)
    assert loader.has_checkpoint()
    left = loader.resume_or_load("", resume=True)
    assert left["iteration"] == 0 and other_extra.value == 1
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_nothing_written_without_save_dir_or_off_main(tmp_path):
    DetectionCheckpointer(nn.Linear(1, 1), "").save("x")
    DetectionCheckpointer(nn.Linear(1, 1), str(tmp_path), save_to_disk=False).save("x")
    assert os.listdir(tmp_path) == []


def _saved_run(tmp_path):
    """Three checkpoints of a Linear model with distinct weights, iteration 0..2, oldest first."""
    model = nn.Linear(2, 2)
    ckpt = DetectionCheckpointer(model, str(tmp_path))
    weights = []
    for it in range(3):
        with torch.no_grad():
            model.weight.fill_(float(it))
        ckpt.save(f"model_{it:07d}", iteration=it)
        os.utime(tmp_path / f"model_{it:07d}.pth", (1000 + it, 1000 + it))
        weights.append(model.weight.detach().clone())
    return weights


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    _saved_run(tmp_path)
    path = tmp_path / "model_0000002.pth"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"Cannot read checkpoint .*model_0000002\.pth.*truncated"):
        DetectionCheckpointer(nn.Linear(2, 2)).load(str(path))


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_resume_falls_back_to_newest_readable_checkpoint_and_says_why(tmp_path, damage, caplog):
    weights = _saved_run(tmp_path)
    last = tmp_path / "model_0000002.pth"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    elif damage == "delete":
        last.unlink()
    else:
        last.write_bytes(b"not a checkpoint at all")
    (tmp_path / "model_0000003.pth.tmp-12345").write_bytes(b"half")
    model = nn.Linear(2, 2)
    ckpt = DetectionCheckpointer(model, str(tmp_path))
    ckpt.logger.addHandler(caplog.handler)  # captured even if setup_logger stopped propagation
    try:
        extra = ckpt.resume_or_load("", resume=True)
    finally:
        ckpt.logger.removeHandler(caplog.handler)
    assert extra["iteration"] == 1
    assert torch.equal(model.weight, weights[1])
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "Resumed from" in message and "model_0000001.pth" in message
    assert "model_0000002.pth" in message
    assert not (tmp_path / "model_0000003.pth.tmp-12345").exists()


def test_resume_with_every_checkpoint_broken_lists_each_file(tmp_path):
    _saved_run(tmp_path)
    for it in range(3):
        (tmp_path / f"model_{it:07d}.pth").write_bytes(b"x")
    with pytest.raises(ValueError) as info:
        DetectionCheckpointer(nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)
    for it in range(3):
        assert f"model_{it:07d}.pth" in str(info.value)


def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path):
    model = nn.Linear(2, 2)
    ckpt = DetectionCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000000", iteration=0)
    with torch.no_grad():
        model.bias[1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"model_0000001\.pth.*bias.*model_0000000\.pth"):
        ckpt.save("model_0000001", iteration=1)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def test_garbage_file_is_reported_corrupt_without_trying_the_full_unpickler(tmp_path, caplog):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"xx")
    ckpt = DetectionCheckpointer(nn.Linear(2, 2))
    ckpt.logger.addHandler(caplog.handler)
    try:
        expected = r"garbage\.pth: UnpicklingError: Unsupported operand 120\. The file is truncated"
        with pytest.raises(ValueError, match=expected):
            ckpt.load(str(path))
    finally:
        ckpt.logger.removeHandler(caplog.handler)
    assert "full unpickler" not in caplog.text
