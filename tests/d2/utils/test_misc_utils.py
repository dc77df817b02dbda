"""file_io's no-network error, seed_all_rng, retry_if_cuda_oom, collect_env_info."""

import random
import urllib.error

import numpy as np
import pytest
import torch

from sephnet.d2.utils import file_io
from sephnet.d2.utils.collect_env import collect_env_info
from sephnet.d2.utils.env import TORCH_VERSION, seed_all_rng
from sephnet.d2.utils.memory import retry_if_cuda_oom


def test_detectron2_url_download_failure_names_the_url(monkeypatch, tmp_path):
    def no_network(url, dir, filename=None, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("iopath.common.file_io.download", no_network)
    with pytest.raises(file_io.DownloadError) as info:
        file_io.PathManager.get_local_path(
            "detectron2://ImageNetPretrained/MSRA/R-50.pkl", cache_dir=str(tmp_path)
        )
    message = str(info.value)
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl" in message
    assert "no network" in message
    assert isinstance(info.value, OSError)


def test_local_paths_pass_through(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    assert file_io.PathManager.get_local_path(str(path)) == str(path)
    with file_io.PathManager.open(str(path)) as f:
        assert f.read() == "x"


def test_seed_all_rng_is_reproducible():
    seed_all_rng(123)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_all_rng(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    seed_all_rng(None)  # draws its own seed without error
    assert TORCH_VERSION == tuple(int(x) for x in torch.__version__.split(".")[:2])


class _FakeCudaTensor:
    """Looks like a CUDA tensor to retry_if_cuda_oom; ``to("cpu")`` gives a real one."""

    class device:
        type = "cuda"

    def to(self, device):
        return torch.ones(2)


def test_retry_if_cuda_oom_retries_then_falls_back_to_cpu():
    calls = []

    def flaky(x):
        calls.append(x)
        if not isinstance(x, torch.Tensor):
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return x * 2

    result = retry_if_cuda_oom(flaky)(_FakeCudaTensor())
    assert torch.equal(result, torch.full((2,), 2.0))
    assert len(calls) == 3  # first try, retry after emptying the cache, CPU fallback


def test_retry_if_cuda_oom_reraises_other_errors():
    def broken():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        retry_if_cuda_oom(broken)()


def test_collect_env_info_reports_the_stack():
    text = collect_env_info(backend="core (sephnet.d2)")
    for row in (
        "Python",
        "PyTorch",
        "numpy",
        "sephnet core",
        "CUDA available",
        "torchvision",
        "fvcore",
        "iopath",
        "pycocotools",
        "cv2",
        "backend",
    ):
        assert row in text, row
    assert torch.__version__ in text
    assert "core (sephnet.d2)" in text
