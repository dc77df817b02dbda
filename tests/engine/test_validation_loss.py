"""ValidationLoss: val_* losses in metrics.json at the period and the end; training unchanged."""
import json
import os

import pytest
import torch
from torch import nn

import train_net
from sephnet.backend import DatasetCatalog, register_coco_instances
from sephnet.config import validate_sephnet_config
from sephnet.data import ShapesParams, generate_shapes
from sephnet.engine.validation_loss import _frozen_state
from sephnet.layers.dropblock import DropBlock2d
from sephnet.modeling.losses.ghm import GradientDensityWeights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "quickstart", "mask_rcnn_R_18_FPN_shapes.yaml")


def _register(root):
    generate_shapes(str(root), ShapesParams(num_train=4, num_val=2))
    names = {}
    for split in ("train", "val"):
        name = f"_test_val_loss_{split}_{os.path.basename(os.path.dirname(root))}"
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name, {}, str(root / "annotations" / f"instances_{split}.json"), str(root / split)
            )
        names[split] = name
    return names


def _run(out, names, *extra):
    args = train_net.argument_parser().parse_args([
        "--config-file", CONFIG,
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "3",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "100",
        "MODEL.RESNETS.NORM", "BN",  # running statistics that validation must not move
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
        *extra,
    ])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_net.main(args)
    finally:
        torch.set_num_threads(threads)
    return [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]


@pytest.mark.slow
def test_validation_losses_are_written_and_leave_training_unchanged(tmp_path):
    names = _register(tmp_path / "shapes")
    plain = _run(tmp_path / "plain", names)
    hooked = _run(
        tmp_path / "hooked", names,
        "MODEL.SEPH.VAL_LOSS.ENABLED", "True",
        "MODEL.SEPH.VAL_LOSS.DATASETS", f"('{names['val']}',)",
        "MODEL.SEPH.VAL_LOSS.PERIOD", "20",
    )
    val = {x["iteration"]: x for x in hooked if "val_total_loss" in x}
    assert sorted(val) == [2]  # after the last iteration (the period is not reached)
    for record in val.values():
        keys = {k for k in record if k.startswith("val_")}
        assert keys == {"val_loss_cls", "val_loss_box_reg", "val_loss_mask", "val_loss_rpn_cls",
                        "val_loss_rpn_loc", "val_total_loss"}
        parts = sum(v for k, v in record.items() if k.startswith("val_loss_"))
        assert record["val_total_loss"] == pytest.approx(parts)
        assert all(torch.isfinite(torch.tensor(v)) for k, v in record.items() if k in keys)
    train = lambda lines: [(x["iteration"], x["total_loss"]) for x in lines if "total_loss" in x]
    assert train(hooked) == train(plain)  # same RNG draws, same BN statistics


class _StubTrainer:
    def __init__(self, max_iter):
        self.iter, self.max_iter, self.model, self.storage = 0, max_iter, None, None


def test_validation_runs_every_period_and_after_the_last_iteration(monkeypatch):
    from sephnet.engine import ValidationLoss

    hook = ValidationLoss.__new__(ValidationLoss)
    hook._period = 40
    hook.trainer = _StubTrainer(max_iter=100)
    ran = []
    monkeypatch.setattr(hook, "compute", lambda model: ran.append(hook.trainer.iter) or {})
    monkeypatch.setattr(train_net.comm, "is_main_process", lambda: False)
    for i in range(100):
        hook.trainer.iter = i
        hook.after_step()
    assert ran == [39, 79, 99]


def test_frozen_state_switches_stateful_modules_and_restores_them():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Dropout(), DropBlock2d(drop_prob=0.1, block_size=1),
                          GradientDensityWeights(momentum=0.5), nn.Conv2d(2, 2, 1))
    model.eval()
    model[1].train()
    with _frozen_state(model):
        assert model.training and model[4].training
        assert not any(m.training for m in list(model)[:4])
    assert not model.training and model[1].training and not model[0].training


def test_ghm_counts_move_only_in_training_mode():
    ghm = GradientDensityWeights(bins=2, momentum=0.5).eval()
    ghm(torch.tensor([0.1, 0.9]))
    assert ghm.acc_count.tolist() == [0.0, 0.0]


def _cfg(sephnet_cfg, **keys):
    cfg = sephnet_cfg()
    cfg.MODEL.LOAD_PROPOSALS = keys.pop("LOAD", False)
    for key, value in keys.items():
        cfg.MODEL.SEPH.VAL_LOSS[key] = value
    return cfg


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"PERIOD": 10}, "only read with"),
        ({"DATASETS": ("coco_2017_val",)}, "only read with"),
        ({"ENABLED": True}, "DATASETS=\\(\\); expected a non-empty"),
        ({"ENABLED": True, "DATASETS": ("a",), "PERIOD": 0}, "PERIOD=0"),
        ({"ENABLED": True, "DATASETS": ("a",), "PERIOD": 30}, "multiple of 20"),
        ({"ENABLED": 1}, "ENABLED=1"),
        ({"ENABLED": True, "DATASETS": ("a",), "PERIOD": 20, "LOAD": True}, "LOAD_PROPOSALS"),
    ],
)
def test_bad_val_loss_keys_are_refused(keys, match, sephnet_cfg):
    with pytest.raises(ValueError, match=match):
        validate_sephnet_config(_cfg(sephnet_cfg, **keys))


def test_unregistered_dataset_is_refused_when_the_hook_is_built(sephnet_cfg):
    from sephnet.engine import ValidationLoss

    cfg = _cfg(sephnet_cfg, ENABLED=True, DATASETS=("no_such_dataset",), PERIOD=5)
    with pytest.raises(ValueError, match="not registered: \\['no_such_dataset'\\]"):
        ValidationLoss.from_config(cfg)
