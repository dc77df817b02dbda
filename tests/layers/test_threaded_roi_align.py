"""ThreadedROIAlign: the wrapped ROIAlign's output bit for bit, the boxes split over threads
only without gradients, and the caller's autocast state in every thread."""
import threading

import pytest
import torch

from sephnet.backend import ROIAlign
from sephnet.layers.threaded_roi_align import MIN_BOXES_PER_THREAD, ThreadedROIAlign


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def rois(count, images=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(count, 2, generator=g) * 30], dim=1)
    return torch.cat([torch.randint(images, (count, 1), generator=g).float(), boxes], dim=1)


class Recorder(torch.nn.Module):
    """Stands in for ROIAlign: returns each box's batch index and x0 as a [M, 2, 1, 1] map,
    and records the thread and autocast state of every call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, input, boxes):
        self.calls.append((threading.current_thread().name, len(boxes),
                           torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
        return boxes[:, :2, None, None].clone()


@pytest.mark.parametrize("aligned", [False, True])
def test_output_is_the_wrapped_roi_aligns_bit_for_bit(two_threads, aligned):
    roi_align = ROIAlign((7, 7), spatial_scale=0.5, sampling_ratio=0, aligned=aligned)
    features = torch.randn(2, 8, 32, 40, generator=torch.Generator().manual_seed(1))
    boxes = rois(333)
    with torch.no_grad():
        expected = roi_align(features, boxes)
        assert torch.equal(ThreadedROIAlign(roi_align)(features, boxes), expected)


def test_boxes_are_split_in_order_over_the_threads(two_threads):
    inner = Recorder()
    boxes = rois(101)
    with torch.no_grad():
        out = ThreadedROIAlign(inner)(torch.zeros(2, 1, 4, 4), boxes)
    assert torch.equal(out[:, :, 0, 0], boxes[:, :2])
    assert sorted(n for _, n, _, _ in inner.calls) == [50, 51]
    assert all(name.startswith("roi_align") and not grad for name, _, _, grad in inner.calls)


def test_autocast_state_reaches_the_threads(two_threads):
    inner = Recorder()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ThreadedROIAlign(inner)(torch.zeros(2, 1, 4, 4), rois(64))
    assert [autocast for _, _, autocast, _ in inner.calls] == [True, True]


@pytest.mark.parametrize("case", ["grad", "few boxes", "one thread", "not on the CPU"])
def test_calls_through_in_the_callers_thread(two_threads, case):
    inner = Recorder()
    count = 2 * MIN_BOXES_PER_THREAD - 1 if case == "few boxes" else 100
    if case == "one thread":
        torch.set_num_threads(1)
    device = "meta" if case == "not on the CPU" else "cpu"  # stands in for a GPU
    with torch.set_grad_enabled(case == "grad"):
        ThreadedROIAlign(inner)(torch.zeros(2, 1, 4, 4, device=device), rois(count))
    assert [(name, n) for name, n, _, _ in inner.calls] == [
        (threading.current_thread().name, count)]


def test_gradients_flow_through_the_direct_call():
    roi_align = ROIAlign((3, 3), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    features = torch.randn(2, 4, 16, 16, requires_grad=True)
    ThreadedROIAlign(roi_align)(features, rois(80)).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
