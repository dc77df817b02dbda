"""EventStorage bookkeeping and the three writers (JSON lines, log line, tensorboard)."""

import json
import logging
import os
import re

import numpy as np
import pytest
import torch

from sephnet.d2.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)


def test_get_event_storage_outside_a_context_is_a_clear_error():
    with pytest.raises(RuntimeError, match="with EventStorage"):
        get_event_storage()
    with pytest.raises(AssertionError):  # detectron2's exception type still catches it
        get_event_storage()


def test_storages_nest_as_a_stack():
    with EventStorage() as outer:
        assert get_event_storage() is outer
        with EventStorage() as inner:
            assert get_event_storage() is inner
        assert get_event_storage() is outer


def test_iteration_bookkeeping_and_history():
    with EventStorage(start_iter=3) as storage:
        storage.put_scalar("loss", 1.0)
        storage.step()
        storage.put_scalar("loss", 3.0)
        storage.iter = 10
        storage.put_scalar("loss", 2.0)
        assert storage.iter == storage.iteration == 10
        assert storage.history("loss").values() == [(1.0, 3), (3.0, 4), (2.0, 10)]
        assert storage.latest() == {"loss": (2.0, 10)}
        assert storage.history("loss").global_avg() == pytest.approx(2.0)
        with pytest.raises(KeyError, match="nothere"):
            storage.history("nothere")


def test_smoothing_hints_select_median_or_latest():
    with EventStorage() as storage:
        for i, v in enumerate([5.0, 1.0, 9.0, 2.0]):
            storage.iter = i
            storage.put_scalar("noisy", v)  # hint True: median of the window
            storage.put_scalar("lr", v, smoothing_hint=False)  # hint False: latest value
        smoothed = storage.latest_with_smoothing_hint(window_size=3)
        assert smoothed["noisy"] == (float(np.median([1.0, 9.0, 2.0])), 3)
        assert smoothed["lr"] == (2.0, 3)
        assert storage.smoothing_hints() == {"noisy": True, "lr": False}
        with pytest.raises(ValueError, match="smoothing_hint"):
            storage.put_scalar("lr", 1.0, smoothing_hint=True)


def test_put_scalars_name_scope_and_tensor_values():
    with EventStorage() as storage:
        storage.put_scalars(a=torch.tensor(1.5), b=2)
        with storage.name_scope("val/"):
            storage.put_scalar("ap", 0.25)
        storage.put_scalar("after", 0.0)
        assert set(storage.histories()) == {"a", "b", "val/ap", "after"}
        assert storage.latest()["a"] == (1.5, 0)


def test_images_and_histograms_are_queued_then_cleared():
    with EventStorage() as storage:
        storage.put_image("img", torch.zeros(3, 4, 4))
        storage.put_histogram("h", torch.arange(10, dtype=torch.float32), bins=5)
        assert storage._vis_data[0][0] == "img"
        hist = storage._histograms[0]
        assert hist["num"] == 10 and hist["min"] == 0.0 and hist["max"] == 9.0
        assert hist["bucket_counts"] == [2.0, 2.0, 2.0, 2.0, 2.0]
        assert hist["sum_squares"] == float(sum(i * i for i in range(10)))
        storage.clear_images()
        storage.clear_histograms()
        assert storage._vis_data == [] and storage._histograms == []


def test_json_writer_writes_one_sorted_line_per_new_iteration(tmp_path):
    path = str(tmp_path / "metrics.json")
    writer = JSONWriter(path, window_size=2)
    with EventStorage() as storage:
        storage.put_scalar("loss_a", 4.0)
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
        storage.step()
        storage.put_scalars(loss_a=2.0)
        storage.put_scalar("lr", 0.2, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: no duplicate lines
        storage.step()
        storage.put_scalar("loss_a", 0.0)
        writer.write()
    writer.close()
    lines = open(path).read().splitlines()
    records = [json.loads(line) for line in lines]
    # iteration 0's lr/loss were superseded by iteration 1's, so only iterations 1 and 2 appear
    assert records == [
        {"iteration": 1, "loss_a": 3.0, "lr": 0.2},  # loss_a: median of last 2 = (4 + 2) / 2
        {"iteration": 2, "loss_a": 1.0},
    ]
    assert lines[0] == json.dumps(records[0], sort_keys=True)


def test_common_metric_printer_format(caplog):
    printer = CommonMetricPrinter(max_iter=100, window_size=2)
    with EventStorage(start_iter=9) as storage:
        storage.put_scalars(total_loss=1.5, loss_cls=0.25, data_time=0.002, time=0.5)
        storage.put_scalar("lr", 0.02, smoothing_hint=False)
        with caplog.at_level(logging.INFO, logger="sephnet.d2.utils.events"):
            printer.write()
    (message,) = [r.getMessage() for r in caplog.records]
    expected = (
        " eta: 0:00:45  iter: 9  total_loss: 1.5  loss_cls: 0.25  time: 0.5000  "
        "data_time: 0.0020  lr: 0.02  "
    )
    if torch.cuda.is_available():
        assert message.startswith(expected) and re.search(r"max_mem: \d+M$", message)
    else:
        assert message == expected
    assert storage.latest()["eta_seconds"] == (0.5 * (100 - 9 - 1), 9)


def test_common_metric_printer_without_timing_or_max_iter(caplog):
    with EventStorage(start_iter=4) as storage:
        storage.put_scalar("loss_x", 0.123456)
        with caplog.at_level(logging.INFO, logger="sephnet.d2.utils.events"):
            CommonMetricPrinter().write()
            CommonMetricPrinter(max_iter=4).write()  # at max_iter: prints nothing
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    expected = " iter: 4  loss_x: 0.1235  lr: N/A  "
    if torch.cuda.is_available():
        assert messages[0].startswith(expected)
    else:
        assert messages[0] == expected


def test_tensorboard_writer_writes_smoothed_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = TensorboardXWriter(str(tmp_path), window_size=2)
    with EventStorage() as storage:
        storage.put_scalar("loss", 1.0)
        storage.put_scalar("lr", 0.5, smoothing_hint=False)
        storage.put_image("img", torch.rand(3, 4, 4))
        writer.write()
        assert storage._vis_data == []  # consumed by the writer
        storage.step()
        storage.put_scalar("loss", 3.0)
        writer.write()
        writer.write()  # nothing new
    writer.close()
    files = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    assert len(files) == 1
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("loss")]
    assert loss == [(0, 1.0), (1, 2.0)]  # second value: median of the last 2 = (1 + 3) / 2
    assert [(e.step, e.value) for e in events.Scalars("lr")] == [(0, 0.5)]
    assert events.Tags()["images"] == ["img"]
