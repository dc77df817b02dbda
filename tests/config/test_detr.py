"""MODEL.SEPH.DETR and the optimizer keys are checked at setup, naming the key."""
import pytest

DETR = {
    "MODEL.META_ARCHITECTURE": "SephDETR",
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.RESNETS.OUT_FEATURES": "['res5']",
}


def test_defaults_are_the_papers(sephnet_cfg):
    node = sephnet_cfg(DETR, validate=True).MODEL.SEPH.DETR
    assert (node.NUM_QUERIES, node.HIDDEN_DIM, node.NHEADS, node.DIM_FEEDFORWARD) == (100, 256, 8, 2048)
    assert (node.ENC_LAYERS, node.DEC_LAYERS, node.DROPOUT) == (6, 6, 0.1)
    assert (node.COST_CLASS, node.COST_BBOX, node.COST_GIOU) == (1.0, 5.0, 2.0)
    assert (node.CLASS_WEIGHT, node.L1_WEIGHT, node.GIOU_WEIGHT, node.NO_OBJECT_WEIGHT) == (1.0, 5.0, 2.0, 0.1)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("MODEL.SEPH.DETR.NUM_QUERIES", "0", "NUM_QUERIES=0"),
        ("MODEL.SEPH.DETR.DEC_LAYERS", "0", "DEC_LAYERS=0"),
        ("MODEL.SEPH.DETR.HIDDEN_DIM", "100", "HIDDEN_DIM=100"),
        ("MODEL.SEPH.DETR.DROPOUT", "1.0", "DROPOUT=1.0"),
        ("MODEL.SEPH.DETR.L1_WEIGHT", "-1.0", "L1_WEIGHT=-1.0"),
        ("MODEL.SEPH.DETR.NO_OBJECT_WEIGHT", "0.0", "NO_OBJECT_WEIGHT=0.0"),
        ("MODEL.SEPH.DETR.IN_FEATURE", "res4", "IN_FEATURE='res4' is not in MODEL.RESNETS.OUT_FEATURES"),
        ("MODEL.MASK_ON", "True", "boxes only"),
        ("MODEL.SEPH.SOLVER.OPTIMIZER", "Adam", "OPTIMIZER='Adam'"),
        ("MODEL.SEPH.SOLVER.BACKBONE_LR_FACTOR", "0.0", "BACKBONE_LR_FACTOR=0.0"),
    ],
)
def test_bad_values_are_refused_naming_the_key(sephnet_cfg, key, value, match):
    with pytest.raises(ValueError, match=match):
        sephnet_cfg({**DETR, key: value}, validate=True)


def test_all_zero_costs_are_refused(sephnet_cfg):
    zero = {f"MODEL.SEPH.DETR.COST_{k}": "0.0" for k in ("CLASS", "BBOX", "GIOU")}
    with pytest.raises(ValueError, match="all 0"):
        sephnet_cfg({**DETR, **zero}, validate=True)


def test_adamw_refuses_nesterov(sephnet_cfg):
    with pytest.raises(ValueError, match="NESTEROV"):
        sephnet_cfg({"MODEL.SEPH.SOLVER.OPTIMIZER": "AdamW", "SOLVER.NESTEROV": "True"}, validate=True)
