"""The index's optional rows (training tricks, augmentations, detectors) under the proxy:
each builds with the proxy's overrides and the proxy's 8 classes, the rows the proxy cannot
shrink are refused by name (by the shapes smoke run too), and a dense detector row trains."""
import glob
import math
import os

import pytest
import torch

from sephnet.backend import EventStorage, build_model
from sephnet.data import build_train_loader
from sephnet.solver import build_optimizer
from sephnet.tools.ablate import proxy_runs, shapes_smoke_row_opts
from sephnet.tools.ablation_index import AblationRow, load_index, select_rows
from sephnet.tools.config_loading import load_config
from sephnet.tools.proxy import (
    ANCHOR_SCALE,
    DENSE_META_ARCHITECTURES,
    PROXY_NUM_CLASSES,
    proxy_opts,
    row_anchor_sizes,
    row_model_opts,
    scaled_anchor_sizes,
)

from .test_ablate import INDEX

EXTRAS = [r for r in load_index(INDEX) if r.table == "extra"]
DETECTORS = os.path.join(os.path.dirname(INDEX), os.pardir, "detectors")
# detector configs the proxy cannot shrink (they change the ResNet trunk it replaces, or
# train with AdamW): not in the index
REFUSED = {"faster_rcnn_DetNet59_FPN_1x.yaml": "MODEL.BACKBONE.NAME",
           "mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml": "DEFORM_ON_PER_STAGE",
           "detr_R_50_coco.yaml": "OPTIMIZER=AdamW",
           "ssd300_vgg16_coco.yaml": "META_ARCHITECTURE=SephSSD",
           "ssd512_vgg16_coco.yaml": "META_ARCHITECTURE=SephSSD"}


def _proxy_config(row, more=()):
    anchors = scaled_anchor_sizes(row_anchor_sizes(row.config))
    return load_config(row.config, proxy_opts(10, 0, anchors)
                       + row_model_opts(row.config, PROXY_NUM_CLASSES)
                       + list(more))


def test_the_index_offers_every_trick_augmentation_and_detector():
    configs = os.path.join(os.path.dirname(INDEX), os.pardir)
    on_disk = {os.path.normpath(p) for pattern in ("tricks/*.yaml", "tricks/augment/Mask-*.yaml",
                                                   "detectors/*.yaml")
               for p in glob.glob(os.path.join(configs, pattern))
               if not os.path.basename(p).startswith("Base-")}
    # the validation-loss hook only logs: it changes no result a row could compare
    on_disk -= {os.path.normpath(os.path.join(configs, "tricks",
                                              "Mask-RCNN-FPN-sephv14_10-val-loss.yaml"))}
    on_disk -= {os.path.normpath(os.path.join(DETECTORS, name)) for name in REFUSED}
    assert on_disk <= {r.config for r in EXTRAS}
    assert len(on_disk) == 27
    assert {"trick-focal", "aug-mosaic", "det-retinanet", "det-fcos", "det-atss"} <= {
        r.id for r in EXTRAS}


@pytest.mark.parametrize("row", EXTRAS, ids=lambda r: r.id)
def test_extra_row_builds_with_the_proxy_overrides_and_eight_classes(row):
    cfg = _proxy_config(row)
    model = build_model(cfg)
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.DATASETS.TRAIN == ("clutter_train",)
    if cfg.MODEL.META_ARCHITECTURE in DENSE_META_ARCHITECTURES:
        assert model.num_classes == 8
    else:
        assert model.roi_heads.num_classes == 8
    # the row's own anchors, scaled like every row's
    own = row_anchor_sizes(row.config)
    assert [list(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES] == [
        [round(s * ANCHOR_SCALE, 1) for s in level] for level in own]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_rows_the_proxy_cannot_shrink_are_refused_by_name(name, tmp_path):
    row = AblationRow("big", "big", "extra", os.path.join(DETECTORS, name), None, "", "")
    with pytest.raises(ValueError, match=f"row 'big' cannot run under --proxy: .*"
                       f"{REFUSED[name]}"):
        proxy_runs([row], str(tmp_path), iterations=10, seeds=1)
    # the shapes smoke run shrinks rows to the same ResNet-18 and SGD: refused alike
    with pytest.raises(ValueError, match=f"row 'big' cannot run under --shapes-smoke: .*"
                       f"{REFUSED[name]}"):
        shapes_smoke_row_opts([row], 4)


def test_rcnn_rows_get_no_extra_overrides():
    (row,) = select_rows(EXTRAS, ["trick-focal"])
    assert row_model_opts(row.config, 8) == []
    (row,) = select_rows(EXTRAS, ["det-fcos"])
    assert row_model_opts(row.config, 8) == ["MODEL.RETINANET.NUM_CLASSES", "8"]
    assert row_model_opts(row.config, 3) == ["MODEL.RETINANET.NUM_CLASSES", "3"]


def test_a_dense_detector_row_trains_two_steps_under_the_proxy(tiny_coco):
    (row,) = select_rows(EXTRAS, ["det-retinanet"])
    data = tiny_coco[:4] + ["SOLVER.IMS_PER_BATCH", "2"]  # the tiny set instead of clutter
    cfg = _proxy_config(row, data)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    batches = iter(build_train_loader(cfg))
    with EventStorage(0):
        for _ in range(2):
            losses = model(next(batches))
            assert set(losses) == {"loss_cls", "loss_box_reg"}
            total = sum(losses.values())
            assert math.isfinite(total.item()) and total.item() > 0
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
