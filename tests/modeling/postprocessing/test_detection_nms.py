"""DetectionNMS and fast_rcnn_inference_with: detectron2's result with plain NMS, the
hand-computed soft-NMS / voting / WBF results otherwise, and the config keys."""
import math

import pytest
import torch

from sephnet.backend import fast_rcnn_inference
from sephnet.config import validate_sephnet_config
from sephnet.modeling.postprocessing import DetectionNMS, fast_rcnn_inference_with


def random_predictions(seed, regions=60, classes=3):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(regions, 1, 2, generator=g) * 80
    wh = 4 + torch.rand(regions, classes, 2, generator=g) * 40
    boxes = torch.cat([xy.expand(-1, classes, -1), xy + wh], dim=2).reshape(regions, -1)
    scores = torch.softmax(torch.randn(regions, classes + 1, generator=g) * 2, dim=1)
    return boxes, scores


@pytest.mark.parametrize("seed", [0, 1])
def test_plain_nms_is_detectron2s_fast_rcnn_inference(seed):
    boxes, scores = random_predictions(seed)
    boxes[3, 0] = float("nan")  # non-finite rows are dropped by both
    ours, our_idx = fast_rcnn_inference_with(DetectionNMS(), [boxes], [scores], [(90, 100)],
                                             0.05, 0.5, 20)
    ref, ref_idx = fast_rcnn_inference([boxes], [scores], [(90, 100)], 0.05, 0.5, 20)
    assert torch.equal(ours[0].pred_boxes.tensor, ref[0].pred_boxes.tensor)
    assert torch.equal(ours[0].scores, ref[0].scores)
    assert torch.equal(ours[0].pred_classes, ref[0].pred_classes)
    assert torch.equal(our_idx[0], ref_idx[0])


def two_region_predictions():
    # region 0: class 0 box [0,0,10,10] p=0.6; region 1: class 0 box [0,0,10,5] p=0.5
    # (IoU 0.5); class-1 columns hold far boxes with p 0.01 (below the score threshold)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 50, 50, 60, 60],
                          [0.0, 0.0, 10.0, 5.0, 50, 50, 60, 60]])
    scores = torch.tensor([[0.6, 0.01, 0.39], [0.5, 0.01, 0.49]])
    return boxes, scores


def run(detection_nms, nms_thresh=0.3):
    boxes, scores = two_region_predictions()
    (out,), (idx,) = fast_rcnn_inference_with(detection_nms, [boxes], [scores], [(100, 100)],
                                              0.05, nms_thresh, 100)
    return out, idx


def test_soft_nms_keeps_the_overlap_with_a_decayed_score():
    out, idx = run(DetectionNMS(method="soft_linear"))
    assert out.scores.tolist() == pytest.approx([0.6, 0.5 * (1 - 0.5)])
    assert idx.tolist() == [0, 1]
    out, _ = run(DetectionNMS(method="soft_gaussian", soft_sigma=0.5))
    assert out.scores.tolist() == pytest.approx([0.6, 0.5 * math.exp(-0.25 / 0.5)])
    # plain NMS at 0.3 removes it
    out, _ = run(DetectionNMS())
    assert len(out) == 1


def test_voting_moves_the_kept_box_and_keeps_its_score():
    out, idx = run(DetectionNMS(fusion="voting", fusion_iou_thresh=0.5))
    assert len(out) == 1 and idx.tolist() == [0]
    # (0.6 * 10 + 0.5 * 5) / 1.1 for y1
    assert out.pred_boxes.tensor[0].tolist() == pytest.approx([0, 0, 10, 8.5 / 1.1])
    assert out.scores.tolist() == pytest.approx([0.6])


def test_wbf_fuses_the_cluster():
    out, idx = run(DetectionNMS(fusion="wbf", fusion_iou_thresh=0.45))
    assert out.pred_boxes.tensor[0].tolist() == pytest.approx([0, 0, 10, 8.5 / 1.1])
    assert out.scores.tolist() == pytest.approx([0.55])
    assert idx.tolist() == [0]


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="method"):
        DetectionNMS(method="soft")
    with pytest.raises(ValueError, match="'nms'"):
        DetectionNMS(method="soft_linear", fusion="wbf")


def cfg_with(sephnet_cfg, **keys):
    cfg = sephnet_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "SephStandardROIHeads"
    for k, v in keys.items():
        cfg.MODEL.SEPH.BOX_NMS[k] = v
    return cfg


def test_config_keys_build_the_detection_nms(sephnet_cfg):
    cfg = cfg_with(sephnet_cfg, METHOD="soft_gaussian", SOFT_SIGMA=0.3, SOFT_SCORE_THRESH=0.01,
                   FUSION="voting", FUSION_IOU_THRESH=0.6)
    validate_sephnet_config(cfg)
    assert DetectionNMS.from_config(cfg) == DetectionNMS("soft_gaussian", 0.3, 0.01, "voting", 0.6)


@pytest.mark.parametrize("keys, match", [
    (dict(METHOD="hard"), "BOX_NMS.METHOD"),
    (dict(FUSION="mean"), "BOX_NMS.FUSION"),
    (dict(METHOD="soft_linear", FUSION="wbf"), "must be 'nms'"),
    (dict(SOFT_SIGMA=0.0), "SOFT_SIGMA"),
    (dict(FUSION_IOU_THRESH=1.5), "FUSION_IOU_THRESH"),
])
def test_config_validation_names_the_key(keys, match, sephnet_cfg):
    with pytest.raises(ValueError, match=match):
        validate_sephnet_config(cfg_with(sephnet_cfg, **keys))


def test_non_default_keys_need_a_sephnet_roi_head(sephnet_cfg):
    cfg = cfg_with(sephnet_cfg, METHOD="soft_linear")
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.NAME"):
        validate_sephnet_config(cfg)
    cfg = cfg_with(sephnet_cfg, FUSION="voting")
    cfg.MODEL.SEPH.IOU_BRANCH.ENABLED = True
    cfg.MODEL.SEPH.IOU_BRANCH.TEST_SCORE = "rank"
    with pytest.raises(ValueError, match="rank"):
        validate_sephnet_config(cfg)


@pytest.mark.parametrize("detection_nms", [
    DetectionNMS(), DetectionNMS(method="soft_gaussian"), DetectionNMS(fusion="voting"),
    DetectionNMS(fusion="wbf")], ids=["nms", "soft", "voting", "wbf"])
def test_select_topk_is_the_first_k_of_all(detection_nms):
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(1500, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(1500, 2, generator=g) * 30], dim=1)
    scores = torch.rand(1500, generator=g)
    classes = torch.randint(3, (1500,), generator=g)
    every = detection_nms.select(boxes, scores, classes, 0.5)
    first = detection_nms.select(boxes, scores, classes, 0.5, topk=40)
    assert len(every[0]) > 40
    for got, expected in zip(first, every):  # voting's weighted means: equal to rounding
        torch.testing.assert_close(got, expected[:40], rtol=1e-6, atol=1e-5)
