"""sephnet.tools.ensemble: fusion of saved predictions by hand, and an ensemble of a model
with itself giving that model's predictions (in memory and through the command line)."""
import json
import os

import pytest
import torch

from sephnet.backend import (
    COCOEvaluator,
    DatasetCatalog,
    build_detection_test_loader,
    build_model,
    import_module,
    register_coco_instances,
)
from sephnet.data import ShapesParams, generate_shapes
from sephnet.layers.threaded_roi_align import ThreadedROIAlign
from sephnet.modeling.postprocessing import DetectionNMS
from sephnet.tools import ensemble

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")
# a narrow quickstart model; images of 128 px, the test size, so the test resize is exact
TINY = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "32",
        "MODEL.FPN.OUT_CHANNELS", "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "16", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
        "MODEL.ROI_MASK_HEAD.NUM_CONV", "1", "MODEL.RPN.POST_NMS_TOPK_TEST", "30",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "15",
        "MODEL.RESNETS.DEPTH", "18"]


def det(image_id, cat, box, score, segm=None):
    d = {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}
    if segm is not None:
        d["segmentation"] = segm
    return d


def test_saved_predictions_fused_by_hand():
    a = [det(1, 5, [0, 0, 10, 10], 0.9, "segA"), det(1, 6, [0, 0, 10, 10], 0.4, "segC")]
    b = [det(1, 5, [2, 0, 10, 10], 0.6, "segB")]  # XYWH: [2, 0, 12, 10], IoU 80/120 = 0.67
    nms = ensemble.fuse_results([a, b], DetectionNMS(), 0.5)
    assert [(r["category_id"], r["bbox"], r["score"], r["segmentation"]) for r in nms] == [
        (5, [0, 0, 10, 10], 0.9, "segA"), (6, [0, 0, 10, 10], 0.4, "segC")
    ]
    wbf = ensemble.fuse_results([a, b], DetectionNMS(fusion="wbf", fusion_iou_thresh=0.55), 0.5)
    # cluster: x0 = 0.6 * 2 / 1.5 = 0.8, x1 = (0.9 * 10 + 0.6 * 12) / 1.5 = 10.8; score 0.75;
    # the class-6 detection is found by one of 2 files: 0.4 / 2
    assert wbf[0]["bbox"] == pytest.approx([0.8, 0, 10.0, 10])
    assert [r["score"] for r in wbf] == pytest.approx([0.75, 0.2])
    assert wbf[0]["segmentation"] == "segA"


@pytest.mark.parametrize("fusion", ["nms", "voting", "wbf"])
def test_a_results_file_fused_with_itself_is_unchanged(fusion):
    a = [det(1, 5, [0, 0, 10, 10], 0.9), det(1, 5, [30, 0, 10, 10], 0.8),
         det(2, 5, [0, 0, 10, 10], 0.7), det(2, 6, [1, 1, 10, 10], 0.3)]
    rule = DetectionNMS(fusion={"nms": "none"}.get(fusion, fusion), fusion_iou_thresh=0.55)
    fused = ensemble.fuse_results([a, a], rule, 0.5)
    key = lambda r: (r["image_id"], -r["score"])  # noqa: E731
    assert [(r["image_id"], r["category_id"], r["score"]) for r in sorted(fused, key=key)] == [
        (r["image_id"], r["category_id"], r["score"]) for r in sorted(a, key=key)
    ]
    for got, want in zip(sorted(fused, key=key), sorted(a, key=key)):
        assert got["bbox"] == pytest.approx(want["bbox"])


def test_bad_results_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="bad.json"):
        ensemble._load_results(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        ensemble._load_results(str(tmp_path / "missing.json"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sephnet_cfg):
    """A tiny shapes dataset, a random quickstart-like model whose boxes are its anchors
    (zero deltas) with unit-scale class logits, saved as config + weights."""
    root = tmp_path_factory.mktemp("ens")
    generate_shapes(str(root / "shapes"), ShapesParams(num_train=1, num_val=3,
                                                       image_sizes=((128, 128),)))
    name = f"_test_ensemble_val_{os.path.basename(str(root))}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(root / "shapes/annotations/instances_val.json"),
                                str(root / "shapes/val"))
    cfg = sephnet_cfg()
    cfg.merge_from_file(QUICKSTART)
    cfg.merge_from_list(TINY + ["DATASETS.TEST", f"('{name}',)"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for n, m in model.named_modules():
            if n.endswith(("anchor_deltas", "bbox_pred")):
                m.weight.zero_()
                m.bias.zero_()
            if n.endswith("cls_score"):
                m.weight.normal_(0.0, 0.05)
    weights = root / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    config = root / "config.yaml"
    config.write_text(cfg.dump())
    plain = plain_predictions(cfg, model, name, root / "plain")
    return cfg, model, name, str(config), str(weights), root, plain


def plain_predictions(cfg, model, name, out):
    evaluator = COCOEvaluator(name, output_dir=str(out))
    inference = import_module("evaluation").inference_on_dataset
    results = inference(model, build_detection_test_loader(cfg, name), evaluator)
    with open(out / "coco_instances_results.json") as f:
        return results, json.load(f)


def prediction_differences(a, b):
    """Where two COCO result lists differ (empty: the same detections; scores to 1e-5, boxes
    to 1e-3 px, masks exactly). Two empty lists count as a difference: nothing was compared."""
    key = lambda r: (r["image_id"], -round(r["score"], 5), r["bbox"][0], r["bbox"][1])  # noqa
    a, b = sorted(a, key=key), sorted(b, key=key)
    if len(a) != len(b) or not a:
        return [f"{len(a)} vs {len(b)} detections"]
    found = []
    for i, (x, y) in enumerate(zip(a, b)):
        if (x["image_id"], x["category_id"]) != (y["image_id"], y["category_id"]):
            found.append(f"{i}: image/class {x['image_id']}/{x['category_id']} vs "
                         f"{y['image_id']}/{y['category_id']}")
        elif x["score"] != pytest.approx(y["score"], abs=1e-5):
            found.append(f"{i}: score {x['score']} vs {y['score']}")
        elif x["bbox"] != pytest.approx(y["bbox"], abs=1e-3):
            found.append(f"{i}: box {x['bbox']} vs {y['bbox']}")
        elif x["segmentation"] != y["segmentation"]:
            found.append(f"{i}: masks differ")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["nms", "wbf"])
def test_a_model_ensembled_with_itself_is_the_model(tiny_run, fusion):
    cfg, model, name, config, weights, root, (plain_results, plain) = tiny_run
    out = root / f"ensemble_{fusion}"
    results = ensemble.main(["--model", config, weights, "--model", config, weights,
                             "--dataset", name, "--fusion", fusion, "--output", str(out)])
    with open(out / "coco_instances_results.json") as f:
        assert prediction_differences(json.load(f), plain) == []
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(plain_results[task]["AP"], nan_ok=True)
    line = json.loads((out / "metrics.json").read_text().splitlines()[-1])
    assert line["ensemble/num_members"] == 2
    assert line["bbox/AP"] == pytest.approx(results["bbox"]["AP"], nan_ok=True)


@pytest.mark.slow
def test_one_member_with_tta_is_generalized_rcnn_with_tta(tiny_run):
    cfg, model, name, config, weights, root, (_, plain) = tiny_run
    aug = ["TEST.AUG.MIN_SIZES", "(96, 128)", "TEST.AUG.MAX_SIZE", "256"]
    tta_cfg = cfg.clone()
    tta_cfg.merge_from_list(aug)
    tta_model = import_module("modeling").GeneralizedRCNNWithTTA(tta_cfg, model)
    _, expected = plain_predictions(tta_cfg, tta_model, name, root / "tta")
    out = root / "ensemble_tta"
    ensemble.main(["--model", config, weights, "--tta", "--dataset", name,
                   "--output", str(out), *aug])
    with open(out / "coco_instances_results.json") as f:
        results = json.load(f)
    assert prediction_differences(results, expected) == []
    assert prediction_differences(results, plain) != []  # the views did change the detections


def test_command_line_errors_name_the_input(tiny_run, tmp_path):
    _, _, name, config, weights, _, _ = tiny_run
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        ensemble.main(["--model", "nope.yaml", weights, "--dataset", name])
    with pytest.raises(ValueError, match="not registered"):
        ensemble.main(["--model", config, weights, "--dataset", "no_such_dataset"])


def test_members_use_the_fast_path_when_asked_and_refuse_bf16(tiny_run):
    _, _, _, config, weights, _, _ = tiny_run
    fast = ["MODEL.SEPH.FAST_INFERENCE.ENABLED", "True"]
    member, _ = ensemble.load_member(config, weights, opts=fast)
    assert any(isinstance(m, ThreadedROIAlign) for m in member.model.modules())
    plain, _ = ensemble.load_member(config, weights)
    assert not any(isinstance(m, ThreadedROIAlign) for m in plain.model.modules())
    with pytest.raises(ValueError, match="MODEL.SEPH.FAST_INFERENCE.BF16 is not supported by "
                                         "the ensemble"):
        ensemble.load_member(config, weights,
                             opts=[*fast, "MODEL.SEPH.FAST_INFERENCE.BF16", "True"])


@pytest.mark.slow
def test_saved_predictions_fused_with_themselves_score_as_the_model(tiny_run):
    cfg, model, name, config, weights, root, (plain_results, _) = tiny_run
    saved = str(root / "plain" / "coco_instances_results.json")
    out = root / "json_nms"
    results = ensemble.main(["--results", saved, saved, "--dataset", name, "--output", str(out)])
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "APl"):  # no large shapes: APl is NaN as detectron2's
            assert results[task][metric] == pytest.approx(plain_results[task][metric],
                                                          nan_ok=True), (task, metric)
