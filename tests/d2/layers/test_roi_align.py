"""ROIAlign against a slow per-ROI / per-bin / per-sample reference written from the
definition (torchvision's sampling and border rules), plus gradients and input forms."""
import importlib
import math

import numpy as np
import pytest
import torch

from sephnet.d2.layers import ROIAlign, roi_align
from sephnet.d2.layers.roi_align import _roi_align_pytorch
from sephnet.d2.layers.torchvision_ops import torchvision_ops

roi_module = importlib.import_module("sephnet.d2.layers.roi_align")


@pytest.fixture
def pure_path(monkeypatch):
    """Route the public API to the core's own implementation even if torchvision works."""
    monkeypatch.setattr(roi_module, "torchvision_ops", lambda: None)


def _bilinear(fmap: np.ndarray, y: float, x: float) -> np.ndarray:
    """Value of fmap[C, H, W] at (y, x) with ROIAlign's border rules."""
    _, height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(fmap.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return hy * hx * fmap[:, y0, x0] + hy * lx * fmap[:, y0, x1] + ly * hx * fmap[:, y1, x0] + ly * lx * fmap[:, y1, x1]


def reference_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    feats = features.double().numpy()
    ph_n, pw_n = output_size
    out = np.zeros((len(rois), feats.shape[1], ph_n, pw_n))
    for k, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        off = 0.5 if aligned else 0.0
        sx, sy = x1 * spatial_scale - off, y1 * spatial_scale - off
        w, h = x2 * spatial_scale - off - sx, y2 * spatial_scale - off - sy
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        bh, bw = h / ph_n, w / pw_n
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(h / ph_n)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(w / pw_n)
        count = max(gh * gw, 1)
        for ph in range(ph_n):
            for pw in range(pw_n):
                acc = np.zeros(feats.shape[1])
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(feats[int(b)], y, x)
                out[k, :, ph, pw] = acc / count
    return torch.from_numpy(out)


def _rois():
    return torch.tensor(
        [
            [0, 1.0, 1.0, 9.0, 7.0],  # inside
            [1, -6.0, 2.5, 6.0, 30.0],  # crosses the left and bottom border
            [0, 30.0, 30.0, 40.0, 45.0],  # entirely outside (beyond [-1, H])
            [1, -20.0, -20.0, -9.0, -12.0],  # entirely outside, negative side
            [0, 4.2, 3.3, 4.6, 3.5],  # smaller than a pixel
            [1, 0.0, 0.0, 11.0, 9.0],  # the whole map
            [0, 10.7, 2.0, 11.9, 8.8],  # touches the last column
            [1, 3.0, 5.0, 3.0, 5.0],  # zero size
            [1, 2.0, 1.0, 22.0, 5.5],  # long and thin: different sample counts per axis
        ],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2, -1])
@pytest.mark.parametrize("spatial_scale,output_size", [(1.0, (3, 3)), (0.25, (2, 3)), (0.5, (4, 2))])
def test_roi_align_matches_reference(aligned, sampling_ratio, spatial_scale, output_size):
    features = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    rois = _rois()
    if spatial_scale != 1.0:
        rois[:, 1:] = rois[:, 1:] / spatial_scale
    expected = reference_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    got = _roi_align_pytorch(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    assert got.shape == (len(rois), 3) + output_size
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_roi_align_float32_matches_reference_and_outside_roi_is_zero():
    features = torch.randn(2, 4, 9, 11)
    rois = _rois().float()
    got = _roi_align_pytorch(features, rois, (3, 3), 1.0, 0, True)
    expected = reference_roi_align(features, rois, (3, 3), 1.0, 0, True).float()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.dtype == torch.float32
    assert torch.all(got[2] == 0) and torch.all(got[3] == 0)
    assert torch.all(got[7] == 0)  # aligned zero-size ROI: zero samples per bin


def test_roi_align_on_a_linear_ramp_reads_the_bin_centres():
    # f(y, x) = x is linear, so (away from borders) every bin averages to its centre x - 0.5.
    width = 16
    features = torch.arange(width, dtype=torch.float64).expand(1, 1, 8, width).clone()
    rois = torch.tensor([[0, 2.0, 2.0, 10.0, 6.0]], dtype=torch.float64)
    got = _roi_align_pytorch(features, rois, (2, 4), 1.0, 0, True)
    expected_x = torch.tensor([3.0, 5.0, 7.0, 9.0], dtype=torch.float64) - 0.5
    torch.testing.assert_close(got[0, 0], expected_x.expand(2, 4))


def test_roi_align_public_api_forms_agree(pure_path):
    features = torch.randn(2, 3, 9, 11)
    rois = _rois().float()
    module = ROIAlign((3, 3), spatial_scale=1.0, sampling_ratio=0)  # aligned defaults to True
    assert module.aligned is True
    by_module = module(features, rois)
    by_function = roi_align(features, rois, 3, 1.0, 0, True)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i)[:, 0] for i in range(2)])
    by_list = roi_align(features, per_image, (3, 3), 1.0, 0, True)
    torch.testing.assert_close(by_module, by_function)
    torch.testing.assert_close(by_list, by_function[order])
    assert "aligned=True" in repr(module)


def test_roi_align_module_casts_rois_to_input_dtype_and_validates_shape(pure_path):
    features = torch.randn(1, 2, 5, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    assert ROIAlign(2, 1.0, 0)(features, rois).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        ROIAlign(2, 1.0, 0)(features, rois[:, 1:])
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(features, torch.tensor([[3, 0.0, 0.0, 4.0, 4.0]]), 2, 1.0, 0, True)


def test_roi_align_empty_rois_give_empty_output_and_gradient_flows(pure_path):
    features = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = roi_align(features, torch.zeros(0, 5), (7, 7), 0.5, 0, True)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert torch.all(features.grad == 0)


def test_roi_align_gradcheck():
    features = torch.randn(2, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.1, 3.9], [1, -1.5, 1.2, 3.3, 5.0], [1, 2.2, 2.1, 2.6, 2.4]], dtype=torch.float64
    )
    for sampling_ratio, aligned in [(0, True), (2, False)]:
        assert torch.autograd.gradcheck(
            lambda f: _roi_align_pytorch(f, rois, (2, 3), 1.0, sampling_ratio, aligned), (features,), fast_mode=True
        )


def test_roi_align_large_adaptive_rois_are_chunked_consistently(monkeypatch):
    features = torch.randn(2, 3, 20, 24, dtype=torch.float64)
    rois = torch.tensor(
        [[0, 0.0, 0.0, 23.0, 19.0], [1, 2.0, 1.0, 10.0, 18.0], [0, 5.0, 5.0, 6.0, 6.0], [1, -3.0, 4.0, 30.0, 9.0]],
        dtype=torch.float64,
    )
    whole = _roi_align_pytorch(features, rois, (3, 3), 1.0, 0, True)
    monkeypatch.setattr(roi_module, "_MAX_ENTRIES_PER_CHUNK", 50)  # forces one ROI per chunk
    chunked = _roi_align_pytorch(features, rois, (3, 3), 1.0, 0, True)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(whole, reference_roi_align(features, rois, (3, 3), 1.0, 0, True))


@pytest.mark.skipif(torchvision_ops() is None, reason="cross-check needs a usable torchvision")
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_equals_torchvision_kernel(aligned, sampling_ratio):
    features = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    rois = _rois()
    expected = torchvision_ops().roi_align(features, rois, (3, 3), 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(_roi_align_pytorch(features, rois, (3, 3), 1.0, sampling_ratio, aligned), expected)
