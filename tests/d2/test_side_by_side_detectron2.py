"""Real detectron2 v0.6 and the portable core, side by side in one process, on detectron2's
own model-zoo configs for RetinaNet and deformable-conv ResNets.

For each config both libraries build the model from the same YAML; the core must have the
same state-dict names, order and shapes, load detectron2's weights strictly, and give the
same backbone features, inference detections and (RetinaNet) training losses. detectron2's
NMS casts boxes to float32, so the models run in float32; the frozen-BN statistics are
perturbed to keep activations moderate, and the tolerances allow float32 rounding. Needs detectron2 (skipped otherwise); the
config files come from ``$DETECTRON2_CONFIGS`` or the installed detectron2's source tree.
"""
import os

import pytest
import torch

d2_config = pytest.importorskip("detectron2.config")
d2_modeling = pytest.importorskip("detectron2.modeling")
d2_events = pytest.importorskip("detectron2.utils.events")
d2_structures = pytest.importorskip("detectron2.structures")

from sephnet.d2.config import get_cfg  # noqa: E402
from sephnet.d2.modeling import build_model  # noqa: E402
from sephnet.d2.structures import Boxes, Instances  # noqa: E402
from sephnet.d2.utils.events import EventStorage  # noqa: E402


def _config_dir():
    root = os.environ.get("DETECTRON2_CONFIGS")
    if root is None:
        import detectron2

        root = os.path.join(os.path.dirname(os.path.dirname(detectron2.__file__)), "configs")
    if not os.path.isdir(root):
        pytest.skip(f"detectron2's configs not found at {root} (set DETECTRON2_CONFIGS)")
    return root


RETINANET = [
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
    "COCO-Detection/retinanet_R_101_FPN_3x.yaml",
    "quick_schedules/retinanet_R_50_FPN_instant_test.yaml",
]
DEFORMABLE = [
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml",
    "Misc/mask_rcnn_R_50_FPN_3x_dconv_c3-c5.yaml",
    "Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml",
]


def _build_pair(name, **overrides):
    path = os.path.join(_config_dir(), name)
    models = []
    for get in (d2_config.get_cfg, get_cfg):
        cfg = get()
        cfg.merge_from_file(path)
        cfg.MODEL.DEVICE = "cpu"
        for key, value in overrides.items():
            node = cfg
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        torch.manual_seed(0)
        builder = d2_modeling.build_model if get is d2_config.get_cfg else build_model
        models.append(builder(cfg))
    theirs, ours = models
    state = theirs.state_dict()
    g = torch.Generator().manual_seed(1)
    for key, value in state.items():
        # Moderate activations: BN scales in [0.3, 0.6], small shifts, variances in [0.5, 2].
        if key.endswith("norm.weight") or key.endswith("norm.running_var"):
            low, high = (0.3, 0.6) if key.endswith("weight") else (0.5, 2.0)
            value.copy_(low + (high - low) * torch.rand(value.shape, generator=g, dtype=value.dtype))
        elif key.endswith("norm.bias") or key.endswith("norm.running_mean"):
            value.copy_(0.1 * torch.randn(value.shape, generator=g, dtype=value.dtype))
        elif "conv2_offset" in key:  # non-zero offsets, so the deformable path is exercised
            value.copy_(0.02 * torch.randn(value.shape, generator=g, dtype=value.dtype))
    theirs.load_state_dict(state)
    return theirs, ours


def _image(seed=2):
    g = torch.Generator().manual_seed(seed)
    return 255 * torch.rand(3, 96, 128, generator=g)


def _check_state_dict(theirs, ours):
    a = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(a) == list(b)
    assert a == b
    ours.load_state_dict(theirs.state_dict(), strict=True)


def _check_detections(theirs, ours, images):
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        want = theirs([{"image": im} for im in images])
        got = ours([{"image": im} for im in images])
    total = 0
    for w, o in zip(want, got):
        w, o = w["instances"], o["instances"]
        assert len(o) == len(w)
        total += len(w)
        torch.testing.assert_close(o.pred_boxes.tensor, w.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(o.scores, w.scores, rtol=1e-4, atol=1e-6)
        assert torch.equal(o.pred_classes, w.pred_classes)
        if w.has("pred_masks"):
            torch.testing.assert_close(o.pred_masks.double(), w.pred_masks.double())
    return total


@pytest.mark.parametrize("name", RETINANET)
def test_retinanet_matches_detectron2(name):
    theirs, ours = _build_pair(name, **{"MODEL.RETINANET.SCORE_THRESH_TEST": 0.01})
    _check_state_dict(theirs, ours)
    images = [_image(2), _image(3)]
    assert _check_detections(theirs, ours, images) > 0

    gts = [
        ([[10.0, 12.0, 60.0, 80.0], [40.0, 5.0, 120.0, 90.0]], [3, 17]),
        ([[0.0, 0.0, 30.0, 30.0]], [0]),
    ]
    losses = []
    for model, inst_cls, boxes_cls, storage in (
        (theirs, d2_structures.Instances, d2_structures.Boxes, d2_events.EventStorage),
        (ours, Instances, Boxes, EventStorage),
    ):
        model.train()
        batch = [
            {
                "image": im,
                "instances": inst_cls(
                    (96, 128),
                    gt_boxes=boxes_cls(torch.tensor(b)),
                    gt_classes=torch.tensor(c),
                ),
            }
            for im, (b, c) in zip(images, gts)
        ]
        with storage(0):
            losses.append({k: v.item() for k, v in model(batch).items()})
    assert sorted(losses[0]) == sorted(losses[1]) == ["loss_box_reg", "loss_cls"]
    for key in losses[0]:
        assert losses[1][key] == pytest.approx(losses[0][key], rel=1e-5), key


@pytest.mark.parametrize("pure", [False, True], ids=["torchvision-op", "pure-pytorch-op"])
@pytest.mark.parametrize("name", DEFORMABLE)
def test_deformable_backbone_matches_detectron2(name, pure, monkeypatch):
    if pure:  # the core's own deformable conv against detectron2 (which uses torchvision's)
        import sephnet.d2.layers.deform_conv as deform_conv

        monkeypatch.setattr(deform_conv, "torchvision_ops", lambda: None)
    theirs, ours = _build_pair(name, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    _check_state_dict(theirs, ours)
    x = _image(4)[None] - 100
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        want, got = theirs.backbone(x), ours.backbone(x)
    assert list(want) == list(got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4)
    assert _check_detections(theirs, ours, [_image(5)]) > 0


@pytest.mark.parametrize("name", DEFORMABLE[:1])
def test_modulated_deformable_state_dict_matches_detectron2(name):
    # detectron2's modulated op has no CPU kernel: compare names and shapes only (the core's
    # modulated numbers are checked against torchvision and a loop reference in tests/d2/layers).
    theirs, ours = _build_pair(name, **{"MODEL.RESNETS.DEFORM_MODULATED": True})
    _check_state_dict(theirs, ours)
