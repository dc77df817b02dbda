"""The optional torchvision kernels: the switch, the 'unusable' fallback, the dispatch."""
import builtins
import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sephnet.backend import ENV_VAR

probe = importlib.import_module("sephnet.d2.layers.torchvision_ops")
nms_module = importlib.import_module("sephnet.d2.layers.nms")
roi_module = importlib.import_module("sephnet.d2.layers.roi_align")


@pytest.fixture
def fresh_probe():
    probe._probe.cache_clear()
    yield
    probe._probe.cache_clear()


def test_env_switch_disables_torchvision(monkeypatch, fresh_probe):
    monkeypatch.setenv(probe.ENV_VAR, "0")
    assert probe.torchvision_ops() is None
    assert "not used" in probe.torchvision_status()


def test_runtime_error_at_import_means_not_usable(monkeypatch, fresh_probe):
    monkeypatch.delenv(probe.ENV_VAR, raising=False)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken_import)
    assert probe.torchvision_ops() is None
    assert probe.torchvision_status().startswith("not usable (RuntimeError")
    # The pure paths run.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1], [5.0, 5.0, 6.0, 6.0]])
    assert nms_module.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    out = roi_module.roi_align(torch.ones(1, 1, 4, 4), torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), 2, 1.0, 0, True)
    torch.testing.assert_close(out, torch.ones(1, 1, 2, 2))


def test_dispatch_to_torchvision_when_usable(monkeypatch):
    calls = []

    class FakeOps:
        def nms(self, *args):
            calls.append("nms")
            return torch.tensor([0])

        def batched_nms(self, *args):
            calls.append("batched_nms")
            return torch.tensor([0])

        def roi_align(self, input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
            calls.append(("roi_align", output_size, spatial_scale, sampling_ratio, aligned))
            return torch.zeros(1)

    monkeypatch.setattr(nms_module, "torchvision_ops", FakeOps)
    monkeypatch.setattr(roi_module, "torchvision_ops", FakeOps)
    boxes, scores = torch.zeros(1, 4), torch.ones(1)
    nms_module.nms(boxes, scores, 0.5)
    nms_module.batched_nms(boxes, scores, torch.zeros(1, dtype=torch.long), 0.5)
    roi_module.ROIAlign(7, 0.25, 0)(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5))
    assert calls == ["nms", "batched_nms", ("roi_align", (7, 7), 0.25, 0, True)]


@pytest.mark.slow  # subprocesses: over 10 s on 2 cores
def test_importing_the_layers_with_a_broken_torchvision_does_not_crash(tmp_path):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("Couldn\'t load custom C++ ops")\n')
    script = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        import sephnet.d2.layers as L
        from sephnet.d2.layers.torchvision_ops import torchvision_ops, torchvision_status
        assert torchvision_ops() is None, torchvision_status()
        print(torchvision_status())
        print(L.nms(torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1]]), torch.tensor([1.0, 0.5]), 0.5).tolist())
        """
    )
    # the core: with real detectron2 installed, choosing it would import the broken torchvision
    env = {**os.environ, ENV_VAR: "core"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "not usable (RuntimeError: Couldn't load custom C++ ops)" in result.stdout
    assert "[0]" in result.stdout
