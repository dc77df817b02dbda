"""Every config of the experiment log uses the original's behaviour where detectron2's
framework differs (keys whose defaults stay detectron2's), checked on the merged config and,
where it is a module's setting, on the module built from it."""
import glob
import os

import pytest
import torch

import sephnet.modeling  # noqa: F401  (registration)
from sephnet.backend import Boxes, ShapeSpec, build_model, build_proposal_generator
from sephnet.config import validate_sephnet_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "coco", "*.yaml"))
    if os.path.basename(p) != "ablations.yaml"
)
IDS = [os.path.basename(p) for p in ROW_CONFIGS]


def _load(sephnet_cfg, path):
    cfg = sephnet_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    validate_sephnet_config(cfg)
    return cfg


def test_defaults_stay_detectron2s(sephnet_cfg):
    cfg = sephnet_cfg()
    assert cfg.MODEL.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST == "all"
    assert tuple(cfg.MODEL.RPN.BBOX_REG_WEIGHTS) == (1.0, 1.0, 1.0, 1.0)
    assert cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX == -1
    solver = cfg.MODEL.SEPH.SOLVER
    assert (solver.COSINE_AFTER_WARMUP, solver.COSINE_END_LR) == (False, 0.0)
    assert (solver.CLIP_GLOBAL_NORM, solver.WEIGHT_DECAY_SCOPE) == (False, "all")


@pytest.mark.parametrize("path", ROW_CONFIGS, ids=IDS)
def test_row_config_uses_the_originals_framework_choices(path, sephnet_cfg):
    cfg = _load(sephnet_cfg, path)
    # One detection per ROI, its top class (the log's APs were measured so).
    assert cfg.MODEL.SEPH.PREDICTOR.CLASSES_PER_ROI_TEST == "top1"
    # The original RPN's box coder.
    assert tuple(cfg.MODEL.RPN.BBOX_REG_WEIGHTS) == (10.0, 10.0, 5.0, 5.0)
    # The original's ROI level rule: canonical level = IN_FEATURES[1].
    assert cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX == 1
    # The original's solver: cosine after warm-up to 1e-6, global-norm clipping at 32,
    # weight decay on the backbone's convs only.
    solver = cfg.MODEL.SEPH.SOLVER
    assert (solver.COSINE_AFTER_WARMUP, solver.COSINE_END_LR) == (True, 1e-6)
    assert (solver.CLIP_GLOBAL_NORM, solver.WEIGHT_DECAY_SCOPE) == (True, "backbone_convs")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE) == (True, "norm", 32.0)


def test_row_rpn_encodes_deltas_with_the_originals_weights_by_value(sephnet_cfg):
    cfg = _load(sephnet_cfg, os.path.join(REPO, "configs", "coco", "Mask-RCNN-FPN-sephv14_10.yaml"))
    shapes = {f"p{k}": ShapeSpec(channels=256, stride=2**k) for k in range(3, 7)}
    rpn = build_proposal_generator(cfg, shapes)
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    gt = torch.tensor([[1.0, 4.0, 11.0, 24.0]], dtype=torch.float64)  # centre +1, +4; same size
    deltas = rpn.box2box_transform.get_deltas(anchors, gt)
    # (wx dx / w, wy dy / h, ww log(w'/w), wh log(h'/h)) with weights (10, 10, 5, 5)
    torch.testing.assert_close(
        deltas, torch.tensor([[10 * 1 / 10, 10 * 4 / 20, 0.0, 0.0]], dtype=torch.float64)
    )


def _level_of_each_box(pooler, sides):
    """Pool boxes of the given sides from maps whose value is their level index."""
    maps = [
        torch.full((1, 1, 1024 // 2**k, 1024 // 2**k), float(k))
        for k in range(len(pooler.level_poolers))
    ]
    boxes = Boxes(torch.tensor([[0.0, 0.0, s, s] for s in sides]))
    return pooler(maps, [boxes]).mean(dim=(1, 2, 3)).round().long().tolist()


def test_sephnv15_pools_by_the_originals_level_rule_by_value(sephnet_cfg):
    """P2-P6: 224-pixel boxes go to P3 (IN_FEATURES[1]) as in the original; detectron2's
    rule sends them to P4."""
    cfg = _load(sephnet_cfg, os.path.join(REPO, "configs", "coco", "Mask-RCNN-FPN-sephNv15.yaml"))
    assert list(cfg.MODEL.ROI_HEADS.IN_FEATURES) == ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        pooler = build_model(cfg).roi_heads.box_pooler  # no weights: runs on CPU tensors
    sides = [100.0, 150.0, 224.0, 300.0, 460.0, 1000.0]
    # original: clip(floor(1 + log2(s / 224)), 0, 4) -> index into P2..P6
    assert _level_of_each_box(pooler, sides) == [0, 0, 1, 1, 2, 3]
    cfg.defrost()
    cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX = -1
    with torch.device("meta"):
        pooler = build_model(cfg).roi_heads.box_pooler
    # detectron2: clip(floor(4 + log2(s / 224)), 2, 6) - 2
    assert _level_of_each_box(pooler, sides) == [0, 1, 2, 2, 3, 4]


@pytest.mark.parametrize("index,message", [(-2, "expected -1"), (5, "does not index"), (True, "")])
def test_level_index_is_validated(index, message, sephnet_cfg):
    cfg = _load(sephnet_cfg, os.path.join(REPO, "configs", "coco", "Mask-RCNN-FPN-sephNv15.yaml"))
    cfg.MODEL.SEPH.ROI_POOLER.CANONICAL_LEVEL_INDEX = index
    with pytest.raises(ValueError, match="CANONICAL_LEVEL_INDEX" + (".*" + message if message else "")):
        validate_sephnet_config(cfg)
