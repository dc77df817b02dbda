"""Caffe2 -> detectron2 name conversion and the suffix-matching heuristic."""
import logging

import pytest
import torch

from sephnet.d2.checkpoint.c2_model_loading import (
    align_and_update_state_dicts,
    convert_basic_c2_names,
    convert_c2_detectron_names,
    convert_torchvision_resnet_names,
)

C2_TO_D2 = {
    # backbone
    "conv1_w": "stem.conv1.weight",
    "res_conv1_bn_s": "stem.conv1.norm.weight",
    "res_conv1_bn_b": "stem.conv1.norm.bias",
    "res_conv1_bn_rm": "stem.conv1.norm.running_mean",
    "res_conv1_bn_riv": "stem.conv1.norm.running_var",
    "res2_0_branch2a_w": "res2.0.conv1.weight",
    "res2_0_branch2a_bn_s": "res2.0.conv1.norm.weight",
    "res2_0_branch1_w": "res2.0.shortcut.weight",
    "res2_0_branch1_bn_b": "res2.0.shortcut.norm.bias",
    "res3_1_branch2b_gn_s": "res3.1.conv2.norm.weight",
    "res4_22_branch2c_gn_bias": "res4.22.conv3.norm.bias",
    "res5_2_branch2c_bn_gamma": "res5.2.conv3.norm.weight",
    "res5_2_branch2c_bn_running_var": "res5.2.conv3.norm.running_var",
    "pred_w": "linear.weight",
    # FPN
    "fpn_inner_res2_2_sum_lateral_w": "fpn_lateral2.weight",
    "fpn_inner_res5_2_sum_b": "fpn_lateral5.bias",
    "fpn_res3_3_sum_w": "fpn_output3.weight",
    "fpn_inner_res4_5_sum_lateral_gn_s": "fpn_lateral4.norm.weight",
    "fpn_res4_5_sum_gn_bias": "fpn_output4.norm.bias",
    # RPN (FPN variant)
    "conv_rpn_fpn2_w": "proposal_generator.rpn_head.conv.weight",
    "rpn_bbox_pred_fpn2_b": "proposal_generator.rpn_head.anchor_deltas.bias",
    "rpn_cls_logits_fpn2_w": "proposal_generator.rpn_head.objectness_logits.weight",
    # box head
    "fc6_w": "box_head.fc1.weight",
    "fc7_b": "box_head.fc2.bias",
    "head_conv1_w": "box_head.conv1.weight",
    "head_conv1_gn_s": "box_head.conv1.norm.weight",
    "cls_score_w": "cls_score.weight",
    "bbox_pred_b": "bbox_pred.bias",
    # mask and keypoint heads
    "_[mask]_fcn1_w": "mask_head.mask_fcn1.weight",
    "mask_fcn_logits_b": "mask_head.predictor.bias",
    "conv_fcn3_w": "roi_heads.keypoint_head.conv_fcn3.weight",
    "kps_score_lowres_w": "roi_heads.keypoint_head.score_lowres.weight",
}

C4_C2_TO_D2 = {
    "conv_rpn_w": "proposal_generator.rpn_head.conv.weight",
    "rpn_bbox_pred_w": "proposal_generator.rpn_head.anchor_deltas.weight",
    "rpn_cls_logits_b": "proposal_generator.rpn_head.objectness_logits.bias",
    "conv5_mask_w": "mask_head.deconv.weight",
}


@pytest.mark.parametrize("table", [C2_TO_D2, C4_C2_TO_D2], ids=["fpn", "c4"])
def test_convert_c2_detectron_names_table(table):
    weights = {k: torch.zeros(8, 2) for k in table}
    renamed, original = convert_c2_detectron_names(weights)
    assert set(renamed) == set(table.values())
    assert original == {v: k for k, v in table.items()}


def test_convert_basic_c2_names_keeps_order_and_input():
    keys = ["res2_0_branch2a_w", "conv1_w", "pred_b", "res_conv1_bn_s"]
    out = convert_basic_c2_names(keys)
    assert out == ["res2.0.conv1.weight", "stem.conv1.weight", "linear.bias", "stem.conv1.norm.weight"]
    assert keys[0] == "res2_0_branch2a_w"


def test_background_class_rows_are_moved_or_dropped():
    k = 3  # foreground classes
    cls = torch.arange(k + 1, dtype=torch.float32)[:, None].repeat(1, 2)  # row i == i
    box = torch.arange(4 * (k + 1), dtype=torch.float32)[:, None]
    mask = torch.arange(k + 1, dtype=torch.float32).view(k + 1, 1, 1, 1)
    renamed, _ = convert_c2_detectron_names(
        {"cls_score_w": cls, "bbox_pred_w": box, "mask_fcn_logits_w": mask, "fc6_b": torch.ones(2)}
    )
    assert renamed["cls_score.weight"][:, 0].tolist() == [1, 2, 3, 0]  # background last
    assert renamed["bbox_pred.weight"][:, 0].tolist() == list(range(4, 16))  # bg deltas dropped
    assert renamed["mask_head.predictor.weight"].flatten().tolist() == [1, 2, 3]
    assert torch.equal(renamed["box_head.fc1.bias"], torch.ones(2))


def test_two_blobs_with_the_same_new_name_raise():
    with pytest.raises(ValueError, match="'conv_rpn_fpn2_w' and 'conv_rpn_w'"):
        convert_c2_detectron_names({"conv_rpn_fpn2_w": torch.zeros(1), "conv_rpn_w": torch.zeros(1)})


def test_torchvision_resnet_names_follow_the_conversion_tool():
    sd = {
        "conv1.weight": 1,
        "bn1.running_mean": 2,
        "layer1.0.conv1.weight": 3,
        "layer1.0.bn3.bias": 4,
        "layer2.0.downsample.0.weight": 5,
        "layer4.2.downsample.1.running_var": 6,
        "fc.weight": 7,
    }
    out = convert_torchvision_resnet_names(sd)
    assert out == {
        "stem.conv1.weight": 1,
        "stem.conv1.norm.running_mean": 2,
        "res2.0.conv1.weight": 3,
        "res2.0.conv3.norm.bias": 4,
        "res3.0.shortcut.weight": 5,
        "res5.2.shortcut.norm.running_var": 6,
        "stem.fc.weight": 7,
    }


def _model_sd():
    return {
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(4, 3),
        "backbone.bottom_up.res2.0.conv1.weight": torch.zeros(4, 4),
        "roi_heads.mesh_head.whatever_conv1.weight": torch.zeros(4, 3),
        "roi_heads.box_predictor.cls_score.weight": torch.zeros(5, 2),
    }


def test_longest_component_suffix_wins():
    ckpt = {
        "conv1.weight": torch.full((4, 3), 1.0),
        "stem.conv1.weight": torch.full((4, 3), 2.0),
        "res2.0.conv1.weight": torch.full((4, 4), 3.0),
        "cls_score.weight": torch.full((5, 2), 4.0),
    }
    out = align_and_update_state_dicts(_model_sd(), ckpt, c2_conversion=False)
    assert out["backbone.bottom_up.stem.conv1.weight"][0, 0] == 2.0
    assert out["backbone.bottom_up.res2.0.conv1.weight"][0, 0] == 3.0
    assert out["roi_heads.box_predictor.cls_score.weight"][0, 0] == 4.0
    # "whatever_conv1.weight" does not end in ".conv1.weight": no match; the unused
    # checkpoint key is passed through under its own name
    assert "roi_heads.mesh_head.whatever_conv1.weight" not in out
    assert out["conv1.weight"][0, 0] == 1.0


def test_shape_mismatch_is_logged_and_left_unmatched(caplog):
    ckpt = {"stem.conv1.weight": torch.zeros(4, 3), "res2.0.conv1.weight": torch.zeros(7)}
    with caplog.at_level(logging.INFO, logger="sephnet.d2.checkpoint.c2_model_loading"):
        out = align_and_update_state_dicts(_model_sd(), ckpt, c2_conversion=False)
    assert "Shape of res2.0.conv1.weight in checkpoint is torch.Size([7])" in caplog.text
    assert "res2.0.conv1.weight will not be loaded" in caplog.text
    assert "backbone.bottom_up.res2.0.conv1.weight" not in out and "res2.0.conv1.weight" in out
    # the single matched key is reported relative to its module
    assert "Following weights matched with submodule backbone.bottom_up.stem.conv1:" in caplog.text
    assert "| weight " in caplog.text and "stem.conv1.weight" in caplog.text


def test_one_checkpoint_key_for_two_model_keys_is_ambiguous():
    model = {"a.norm.weight": torch.zeros(2), "b.norm.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="Cannot match one checkpoint key to multiple keys"):
        align_and_update_state_dicts(model, {"norm.weight": torch.ones(2)}, c2_conversion=False)


def test_nothing_matches_returns_checkpoint_and_warns(caplog):
    ckpt = {"foo.bar": torch.zeros(1)}
    with caplog.at_level(logging.WARNING, logger="sephnet.d2.checkpoint.c2_model_loading"):
        out = align_and_update_state_dicts(_model_sd(), ckpt, c2_conversion=False)
    assert out == ckpt and out is not ckpt
    assert "No checkpoint weight matched any model parameter." in caplog.text


def test_match_table_groups_by_module_and_names_common_prefix(caplog):
    model = {
        "backbone.bottom_up.stem.conv1.norm.weight": torch.zeros(2),
        "backbone.bottom_up.stem.conv1.norm.bias": torch.zeros(2),
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(2, 3),
    }
    ckpt = {"res_conv1_bn_s": torch.ones(2), "res_conv1_bn_b": torch.ones(2), "conv1_w": torch.ones(2, 3)}
    with caplog.at_level(logging.INFO, logger="sephnet.d2.checkpoint.c2_model_loading"):
        out = align_and_update_state_dicts(model, ckpt, c2_conversion=True)
    assert set(out) == set(model)
    assert "Following weights matched with submodule backbone.bottom_up.stem.conv1:" in caplog.text
    assert "| norm.* " in caplog.text and "res_conv1_bn_{b,s}" in caplog.text
    assert "| weight " in caplog.text and "conv1_w" in caplog.text
