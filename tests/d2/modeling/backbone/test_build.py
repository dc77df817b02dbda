import pytest
import torch
from torch import nn

from sephnet.d2.config import get_cfg
from sephnet.d2.layers import ShapeSpec
from sephnet.d2.modeling.backbone import BACKBONE_REGISTRY, Backbone, build_backbone


class _TinyBackbone(Backbone):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2, 1)
        self._out_features = ["out"]
        self._out_feature_channels = {"out": 2}
        self._out_feature_strides = {"out": 1}

    def forward(self, x):
        return {"out": self.conv(x)}


@pytest.fixture
def registered():
    """Register throw-away builders and remove them afterwards (the registry is global)."""
    names = []

    def register(name, fn):
        fn.__name__ = name
        BACKBONE_REGISTRY.register(fn)
        names.append(name)

    yield register
    for name in names:
        BACKBONE_REGISTRY._obj_map.pop(name)


def test_build_backbone_passes_pixel_mean_channels(registered):
    seen = []

    def builder(cfg, input_shape):
        seen.append(input_shape)
        return _TinyBackbone(input_shape.channels)

    registered("_test_tiny_backbone", builder)
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "_test_tiny_backbone"
    cfg.MODEL.PIXEL_MEAN = [1.0, 2.0, 3.0, 4.0]
    cfg.MODEL.PIXEL_STD = [1.0, 1.0, 1.0, 1.0]
    model = build_backbone(cfg)
    assert seen == [ShapeSpec(channels=4)]
    assert model.output_shape() == {"out": ShapeSpec(channels=2, stride=1)}
    assert model.size_divisibility == 0
    assert model(torch.zeros(1, 4, 3, 3))["out"].shape == (1, 2, 3, 3)
    build_backbone(cfg, ShapeSpec(channels=1))
    assert seen[-1] == ShapeSpec(channels=1)


def test_build_backbone_rejects_non_backbone_and_unknown_names(registered):
    registered("_test_not_a_backbone", lambda cfg, input_shape: nn.Identity())
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "_test_not_a_backbone"
    with pytest.raises(TypeError, match="_test_not_a_backbone"):
        build_backbone(cfg)
    cfg.MODEL.BACKBONE.NAME = "no_such_backbone"
    with pytest.raises(KeyError):
        build_backbone(cfg)


def test_backbone_is_abstract():
    with pytest.raises(TypeError):
        Backbone()
