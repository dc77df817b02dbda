"""Norm config keys: defaults, YAML merging, and the setup-time errors of validate_config."""
import os

import pytest

from sephnet.backend import build_model
from sephnet.config import validate_sephnet_config
from sephnet.config.norm import validate_config
from sephnet.layers.evonorm import EvoNormS0


def _cfg(sephnet_cfg, **overrides):
    cfg = sephnet_cfg()
    for key, value in overrides.items():
        cfg.merge_from_list([key.replace("__", "."), value])
    return cfg


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEPH_FPN = {"MODEL__BACKBONE__NAME": "build_seph_resnet_fpn_backbone"}
SEPH_MASK = {
    "MODEL__MASK_ON": True,
    "MODEL__ROI_MASK_HEAD__NAME": "SephMaskRCNNConvUpsampleHead",
}
SEPH_RPN = {"MODEL__RPN__HEAD_NAME": "SephRPNHead"}


def test_defaults_are_the_logs_values_and_validate(sephnet_cfg):
    cfg = _cfg(sephnet_cfg)
    assert cfg.MODEL.SEPH.EVONORM.GROUPS == 32
    assert cfg.MODEL.SEPH.EVONORM.EPS == 1e-5
    assert cfg.MODEL.SEPH.FPN.TOP_BLOCK == "LastLevelMaxPool"
    assert cfg.MODEL.SEPH.FPN.TOP_BLOCK_NUM_LEVELS == 1
    assert cfg.MODEL.SEPH.RPN_HEAD.NORM == ""
    validate_sephnet_config(cfg)


def test_evonorm_everywhere_validates_with_seph_components(sephnet_cfg):
    overrides = dict(
        **SEPH_FPN,
        **SEPH_MASK,
        **SEPH_RPN,
        MODEL__FPN__NORM="EvoNormS0",
        MODEL__ROI_MASK_HEAD__NORM="EvoNormS0",
        MODEL__SEPH__RPN_HEAD__NORM="EvoNormS0",
        MODEL__SEPH__FPN__TOP_BLOCK="LastLevelStridedConvs",
    )
    cfg = _cfg(sephnet_cfg, **overrides)
    validate_config(cfg)
    # the same keys over detectron2's FPN levels, on a narrow ResNet-18, build EvoNormS0 exactly
    # where they say
    cfg = _cfg(sephnet_cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-RCNN-FPN.yaml"))
    for key, value in overrides.items():
        cfg.merge_from_list([key.replace("__", "."), value])
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
                         "MODEL.DEVICE", "cpu"])
    validate_config(cfg)
    model = build_model(cfg)
    owners = sorted({".".join(name.split(".")[:2]) for name, m in model.named_modules()
                     if isinstance(m, EvoNormS0)})
    assert owners == sorted(
        # the laterals are plain 1x1 convs with a bias, as in the original (docs/components.md)
        [f"backbone.fpn_output{level}" for level in (2, 3, 4, 5)]
        + ["backbone.top_block", "proposal_generator.rpn_head", "roi_heads.mask_head"]
    )


def test_yaml_keys_merge_and_typos_fail(tmp_path, sephnet_cfg):
    good = tmp_path / "good.yaml"
    good.write_text(
        "MODEL:\n  SEPH:\n    EVONORM:\n      GROUPS: 16\n    FPN:\n"
        "      TOP_BLOCK: LastLevelStridedConvs\n    RPN_HEAD:\n      NORM: GN\n"
    )
    cfg = _cfg(sephnet_cfg)
    cfg.merge_from_file(str(good))
    assert cfg.MODEL.SEPH.EVONORM.GROUPS == 16
    assert cfg.MODEL.SEPH.FPN.TOP_BLOCK == "LastLevelStridedConvs"
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  SEPH:\n    EVONORM:\n      GROUP: 16\n")
    with pytest.raises(KeyError, match="GROUP"):
        _cfg(sephnet_cfg).merge_from_file(str(bad))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"MODEL__SEPH__EVONORM__GROUPS": 0}, "MODEL.SEPH.EVONORM.GROUPS=0"),
        ({"MODEL__SEPH__EVONORM__EPS": 0.0}, "MODEL.SEPH.EVONORM.EPS=0.0"),
        ({"MODEL__FPN__NORM": "EvoNorm"}, "MODEL.FPN.NORM: Unknown norm 'EvoNorm'"),
        (
            {"MODEL__ROI_MASK_HEAD__NORM": "evonorm"},
            "MODEL.ROI_MASK_HEAD.NORM: Unknown norm 'evonorm'",
        ),
        (
            {**SEPH_RPN, "MODEL__SEPH__RPN_HEAD__NORM": "LN2"},
            "MODEL.SEPH.RPN_HEAD.NORM: Unknown norm 'LN2'",
        ),
        (
            {"MODEL__RESNETS__NORM": "EvoNormS0"},
            "MODEL.RESNETS.NORM='EvoNormS0' is a sephnet norm",
        ),
    ],
)
def test_bad_values_are_rejected_naming_the_key(overrides, message, sephnet_cfg):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate_config(_cfg(sephnet_cfg, **overrides))


def test_evonorm_fpn_needs_a_seph_backbone_builder(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, MODEL__FPN__NORM="EvoNormS0",
               MODEL__BACKBONE__NAME="build_resnet_fpn_backbone")
    with pytest.raises(ValueError) as info:
        validate_config(cfg)
    assert "MODEL.FPN.NORM='EvoNormS0'" in str(info.value)
    assert "MODEL.BACKBONE.NAME='build_resnet_fpn_backbone'" in str(info.value)
    # detectron2's own norms stay fine with detectron2's builder.
    validate_config(_cfg(sephnet_cfg, MODEL__FPN__NORM="GN",
                         MODEL__BACKBONE__NAME="build_resnet_fpn_backbone"))


def test_top_block_choice_is_checked(sephnet_cfg):
    with pytest.raises(ValueError, match="TOP_BLOCK='P6'.*LastLevelMaxPool"):
        validate_config(_cfg(sephnet_cfg, **SEPH_FPN, MODEL__SEPH__FPN__TOP_BLOCK="P6"))
    with pytest.raises(ValueError, match="only read by sephnet backbone builders"):
        validate_config(_cfg(sephnet_cfg, MODEL__SEPH__FPN__TOP_BLOCK="LastLevelStridedConvs"))
    with pytest.raises(ValueError, match="TOP_BLOCK_NUM_LEVELS=0"):
        validate_config(_cfg(sephnet_cfg, **SEPH_FPN, MODEL__SEPH__FPN__TOP_BLOCK_NUM_LEVELS=0))


@pytest.mark.parametrize(
    "norm,groups_from", [("EvoNormS0", "MODEL.SEPH.EVONORM.GROUPS"), ("GN", "GN")]
)
def test_fpn_channels_must_divide_into_groups(norm, groups_from, sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **SEPH_FPN, MODEL__FPN__NORM=norm, MODEL__FPN__OUT_CHANNELS=48)
    with pytest.raises(ValueError) as info:
        validate_config(cfg)
    assert "MODEL.FPN.OUT_CHANNELS=48 is not divisible by 32" in str(info.value)
    assert groups_from in str(info.value)
    # EvoNormS0 follows MODEL.SEPH.EVONORM.GROUPS.
    if norm == "EvoNormS0":
        cfg.MODEL.SEPH.EVONORM.GROUPS = 16
        validate_config(cfg)


def test_evonorm_mask_head_needs_the_seph_mask_head_only_with_masks_on(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, MODEL__MASK_ON=True, MODEL__ROI_MASK_HEAD__NORM="EvoNormS0")
    with pytest.raises(ValueError) as info:
        validate_config(cfg)
    assert "MODEL.ROI_MASK_HEAD.NORM='EvoNormS0'" in str(info.value)
    assert "MODEL.ROI_MASK_HEAD.NAME='MaskRCNNConvUpsampleHead'" in str(info.value)
    cfg.MODEL.MASK_ON = False  # the mask head is not built
    validate_config(cfg)


def test_mask_conv_dim_must_divide_into_groups(sephnet_cfg):
    cfg = _cfg(sephnet_cfg,
        **SEPH_MASK, MODEL__ROI_MASK_HEAD__NORM="EvoNormS0", MODEL__ROI_MASK_HEAD__CONV_DIM=40
    )
    with pytest.raises(ValueError, match=r"ROI_MASK_HEAD\.CONV_DIM=40 is not divisible by 32"):
        validate_config(cfg)


def test_rpn_head_norm_needs_seph_rpn_head(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, MODEL__SEPH__RPN_HEAD__NORM="EvoNormS0")
    with pytest.raises(ValueError) as info:
        validate_config(cfg)
    assert "MODEL.SEPH.RPN_HEAD.NORM='EvoNormS0'" in str(info.value)
    assert "'StandardRPNHead'" in str(info.value)


def test_rpn_head_width_checks(sephnet_cfg):
    cfg = _cfg(sephnet_cfg, **SEPH_RPN, MODEL__SEPH__RPN_HEAD__NORM="EvoNormS0",
               MODEL__FPN__OUT_CHANNELS=48)
    with pytest.raises(ValueError, match=r"MODEL\.FPN\.OUT_CHANNELS \(RPN input\)=48"):
        validate_config(cfg)
    cfg.MODEL.RPN.CONV_DIMS = [64]  # the conv's width is what gets normalised
    validate_config(cfg)
    cfg.MODEL.RPN.CONV_DIMS = [40]
    with pytest.raises(ValueError, match=r"MODEL\.RPN\.CONV_DIMS\[0\]=40"):
        validate_config(cfg)
    cfg.MODEL.RPN.CONV_DIMS = [-1, -1]
    with pytest.raises(ValueError, match=r"MODEL\.RPN\.CONV_DIMS=\[-1, -1\]"):
        validate_config(cfg)
