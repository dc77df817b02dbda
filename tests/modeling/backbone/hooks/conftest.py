"""Stub pyramids for the hook tests: fixed random maps with known strides, no ResNet."""
import pytest
import torch

from sephnet.backend import ShapeSpec

IMAGE = 64


def make_shapes(prefix="p", levels=(3, 4, 5, 6), channels=16):
    return {f"{prefix}{l}": ShapeSpec(channels=channels, stride=2**l) for l in levels}


def make_features(shapes, batch=2, image=IMAGE, dtype=torch.float32):
    return {
        k: torch.randn(batch, s.channels, -(-image // s.stride), -(-image // s.stride), dtype=dtype)
        for k, s in shapes.items()
    }


def check_declared(outputs, shapes, image=IMAGE):
    """Keys in order, channels, and sizes image/stride equal the declared shapes."""
    assert list(outputs) == list(shapes)
    for k, s in shapes.items():
        size = -(-image // s.stride)
        assert outputs[k].shape[1:] == (s.channels, size, size), k


@pytest.fixture
def tiny_cfg(sephnet_cfg):
    cfg = sephnet_cfg()
    cfg.MODEL.SEPH.EVONORM.GROUPS = 4
    return cfg
