"""Validation losses during training (mmdetection's ``[('train', 1), ('val', 1)]`` workflow).

Every ``MODEL.SEPH.VAL_LOSS.PERIOD`` iterations (and after the last one), :class:`ValidationLoss`
runs the model on every image of ``MODEL.SEPH.VAL_LOSS.DATASETS`` and records the mean of
each loss as ``val_<loss name>`` plus ``val_total_loss`` in the trainer's EventStorage, so
the writers put them into ``metrics.json`` and TensorBoard beside the training losses.

How the losses are computed, so that validation does not change training:

* the model stays in training mode (detectron2's models only return losses there), under
  ``torch.no_grad()``; modules whose training-mode forward changes state or draws noise
  (BatchNorm running statistics, dropout, DropBlock, GHM bin counts) are switched to
  evaluation mode for the duration;
* images are mapped with the test-time resize (``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``, no
  flip) and keep their annotations; every image is seen once (the inference sampler shards
  them over workers, and the sums are gathered across processes);
* the RNG states (torch CPU and CUDA, Python, NumPy) are restored afterwards, so the training
  run's random draws are those of a run without the hook (ROI sampling during validation
  draws from them), and the model's own scalars (e.g. ``roi_head/num_fg_samples``) go to a
  throw-away EventStorage.
"""
import contextlib
import random
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch
from torch import nn

from sephnet.backend import (
    DatasetCatalog,
    DatasetMapper,
    EventStorage,
    HookBase,
    build_detection_test_loader,
    comm,
    data,
    detection_utils,
)
from sephnet.layers.dropblock import DropBlock2d
from sephnet.modeling.losses.ghm import GradientDensityWeights

__all__ = ["ValidationLoss"]

# Modules whose training-mode forward updates state or is random.
_STATEFUL = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    DropBlock2d,
    GradientDensityWeights,
)


@contextlib.contextmanager
def _frozen_state(model: nn.Module) -> Iterator[None]:
    """Training mode for the model, evaluation mode for its stateful/random modules; every
    module's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    for m in model.modules():
        if isinstance(m, _STATEFUL):
            m.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _restored_rng() -> Iterator[None]:
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ValidationLoss(HookBase):
    """Record ``val_*`` losses every ``period`` iterations and after the last one.

    Register it before the trainer's ``PeriodicWriter`` (``train_net.Trainer`` does), so a
    validation at a writing iteration is written at once.
    """

    def __init__(self, cfg, *, period: int, dataset_names: Sequence[str]):
        """
        Args:
            cfg: the training config (mapper and loader settings: ``INPUT.*``,
                ``DATALOADER.NUM_WORKERS``).
            period: iterations between validations, >= 1.
            dataset_names: registered datasets with annotations, at least one.

        Raises:
            ValueError: a bad period, no dataset, or a dataset that is not registered.
        """
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"ValidationLoss: period={period!r}; expected an int >= 1.")
        names = list(dataset_names)
        unknown = [n for n in names if n not in DatasetCatalog.list()]
        if not names or unknown:
            raise ValueError(
                f"MODEL.SEPH.VAL_LOSS.DATASETS={names}: expected registered dataset names; "
                f"not registered: {unknown}."
            )
        self._period = period
        mapper = DatasetMapper(
            cfg, is_train=True, augmentations=detection_utils.build_augmentation(cfg, False)
        )
        dataset = data.get_detection_dataset_dicts(names, filter_empty=False)
        self._loader = build_detection_test_loader(
            dataset=dataset, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def from_config(cls, cfg) -> "ValidationLoss":
        node = cfg.MODEL.SEPH.VAL_LOSS
        return cls(cfg, period=node.PERIOD, dataset_names=node.DATASETS)

    def compute(self, model: nn.Module) -> Dict[str, float]:
        """Mean of each loss over the validation images (all processes), plus ``total_loss``."""
        sums: Dict[str, float] = {}
        count = 0
        with _frozen_state(model), _restored_rng(), torch.no_grad(), EventStorage():
            for batch in self._loader:
                losses = model(batch)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(batch)
                count += len(batch)
        gathered: List = comm.all_gather((sums, count))
        total_count = sum(c for _, c in gathered)
        means = {}
        for name in sorted({k for s, _ in gathered for k in s}):
            means[name] = sum(s.get(name, 0.0) for s, _ in gathered) / max(total_count, 1)
        means["total_loss"] = sum(means.values())
        return means

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter % self._period == 0 or next_iter == self.trainer.max_iter:
            means = self.compute(self.trainer.model)
            if comm.is_main_process():
                self.trainer.storage.put_scalars(
                    **{f"val_{k}": v for k, v in means.items()}, smoothing_hint=False
                )
