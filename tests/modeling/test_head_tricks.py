"""Head activation and DropBlock placed in built ROI heads and ResNet stages; their key checks."""
import pytest
import torch
from torch import nn

import sephnet.modeling.roi_heads  # noqa: F401  (registers heads)
from sephnet.backend import ShapeSpec, build_backbone, build_roi_heads
from sephnet.config import validate_sephnet_config
from sephnet.layers.dropblock import DropBlock2d

SHAPES = {"p3": ShapeSpec(channels=32, stride=8)}


def _cfg(sephnet_cfg, **keys):
    cfg = sephnet_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_BOX_HEAD.NORM = "GN"
    cfg.MODEL.ROI_MASK_HEAD.NORM = "GN"
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.SEPH.BOX_HEAD.NAME = "TwinTowerConvFCHead"
    cfg.MODEL.SEPH.BOX_HEAD.NUM_CONV = 2
    cfg.MODEL.SEPH.BOX_HEAD.NUM_FC = 1
    cfg.MODEL.SEPH.BOX_HEAD.CONV_DIM = 32
    cfg.MODEL.SEPH.BOX_HEAD.FC_DIM = 64
    cfg.MODEL.SEPH.BOX_HEAD.RELU_AFTER_NORM = True  # GN + ReLU, the activation to swap
    for key, value in keys.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    validate_sephnet_config(cfg)
    return cfg


def _count(module, cls):
    return sum(type(m) is cls for m in module.modules())


def test_head_activation_and_dropblock_go_into_box_and_mask_heads(sephnet_cfg):
    plain = build_roi_heads(_cfg(sephnet_cfg), SHAPES)
    tricked = build_roi_heads(
        _cfg(sephnet_cfg, **{
            "MODEL.SEPH.HEAD_ACTIVATION.NAME": "Mish",
            "MODEL.SEPH.DROPBLOCK.HEADS": ["box", "mask"],
        }),
        SHAPES,
    )
    relus = _count(plain.box_head, nn.ReLU), _count(plain.mask_head, nn.ReLU)
    assert relus[0] > 0 and relus[1] > 0
    assert (_count(tricked.box_head, nn.Mish), _count(tricked.mask_head, nn.Mish)) == relus
    assert _count(tricked, nn.ReLU) == 0
    # 2 convs per tower x 2 towers; 2 mask convs (not the deconv, not the mask predictor)
    assert _count(tricked.box_head, DropBlock2d) == 4
    assert _count(tricked.mask_head, DropBlock2d) == 2
    assert list(tricked.state_dict()) == list(plain.state_dict())
    tricked.train()
    x = torch.randn(3, 32, 14, 14)  # POOLER_RESOLUTION 14 (default)
    assert tricked.box_head(x).cls.shape == plain.box_head(x).cls.shape


def test_head_activation_without_relus_is_refused_at_build(sephnet_cfg):
    evonorm = {
        "MODEL.MASK_ON": False,
        "MODEL.ROI_BOX_HEAD.NORM": "EvoNormS0",
        "MODEL.SEPH.EVONORM.GROUPS": 16,
    }
    assert _count(build_roi_heads(_cfg(sephnet_cfg, **evonorm), SHAPES).box_head, nn.ReLU) == 0
    cfg = _cfg(sephnet_cfg, **evonorm, **{"MODEL.SEPH.HEAD_ACTIVATION.NAME": "Swish"})
    with pytest.raises(ValueError, match="no ReLU to replace"):
        build_roi_heads(cfg, SHAPES)


def test_backbone_dropblock_after_res4_and_res5_keeps_the_state_dict(sephnet_cfg):
    def backbone_cfg(**keys):
        return _cfg(sephnet_cfg, **{
            "MODEL.BACKBONE.NAME": "build_seph_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH": 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
            "MODEL.RESNETS.NORM": "BN",
            "MODEL.RESNETS.OUT_FEATURES": ["res3", "res4", "res5"],
            "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5"],
            "MODEL.FPN.OUT_CHANNELS": 32,
            **keys,
        })

    cfg = backbone_cfg(**{
        "MODEL.SEPH.DROPBLOCK.BACKBONE_STAGES": ["res4", "res5"],
        "MODEL.SEPH.DROPBLOCK.RAMP_ITERS": 1000,
    })
    backbone = build_backbone(cfg)
    assert _count(backbone.bottom_up.res4, DropBlock2d) == 1
    assert _count(backbone.bottom_up.res5, DropBlock2d) == 1
    assert _count(backbone.bottom_up.res3, DropBlock2d) == 0
    assert backbone.bottom_up.res4.dropblock.ramp_iters == 1000
    assert list(backbone.state_dict()) == list(build_backbone(backbone_cfg()).state_dict())
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert set(out) == {"p3", "p4", "p5", "p6"}


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"MODEL.SEPH.HEAD_ACTIVATION.NAME": "GELU"}, "NAME='GELU'"),
        ({"MODEL.SEPH.HEAD_ACTIVATION.NAME": "Mish", "MODEL.ROI_HEADS.NAME": "StandardROIHeads"}, "not one"),
        ({"MODEL.SEPH.DROPBLOCK.BACKBONE_STAGES": ["res6"]}, "expected distinct entries"),
        ({"MODEL.SEPH.DROPBLOCK.HEADS": ["rpn"]}, "expected distinct entries"),
        ({"MODEL.SEPH.DROPBLOCK.HEADS": ["box"], "MODEL.SEPH.DROPBLOCK.DROP_PROB": 1.0}, "DROP_PROB=1.0"),
        ({"MODEL.SEPH.DROPBLOCK.DROP_PROB": 0.2}, "DROP_PROB=0.2 .needs BACKBONE_STAGES or HEADS"),
        ({"MODEL.SEPH.DROPBLOCK.HEAD_BLOCK_SIZE": 5}, "HEAD_BLOCK_SIZE=5"),
        ({"MODEL.SEPH.DROPBLOCK.RAMP_ITERS": 100}, "RAMP_ITERS=100"),
        ({"MODEL.SEPH.DROPBLOCK.HEADS": ["box"], "MODEL.SEPH.DROPBLOCK.RAMP_ITERS": -1}, "RAMP_ITERS=-1"),
        ({"MODEL.SEPH.DROPBLOCK.HEADS": ["mask"], "MODEL.MASK_ON": False}, "MASK_ON is False"),
        ({"MODEL.SEPH.DROPBLOCK.BACKBONE_STAGES": ["res4"]}, "MODEL.BACKBONE.NAME='build_resnet_backbone'"),
        ({"MODEL.ROI_BOX_HEAD.NORM": "FRN"}, "an FC output lacks"),
    ],
)
def test_bad_trick_keys_are_refused(keys, match, sephnet_cfg):
    with pytest.raises(ValueError, match=match):
        _cfg(sephnet_cfg, **keys)


def test_cascade_box_heads_get_the_head_tricks_in_every_stage(sephnet_cfg):
    heads = build_roi_heads(
        _cfg(sephnet_cfg, **{
            "MODEL.MASK_ON": False,
            "MODEL.ROI_HEADS.NAME": "SephCascadeROIHeads",
            "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
            "MODEL.SEPH.HEAD_ACTIVATION.NAME": "HardSwish",
            "MODEL.SEPH.DROPBLOCK.HEADS": ["box"],
        }),
        SHAPES,
    )
    assert len(heads.box_head) == 3
    for stage in heads.box_head:
        assert _count(stage, nn.Hardswish) > 0 and _count(stage, nn.ReLU) == 0
        assert _count(stage, DropBlock2d) == 4
