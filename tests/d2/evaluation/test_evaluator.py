"""inference_on_dataset with a dummy model and evaluator; DatasetEvaluators merging."""

import logging
import re

import pytest
import torch
from torch import nn

from sephnet.d2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset


class _Doubler(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0))
        self.seen_modes = []
        self.grad_enabled = []

    def forward(self, batch):
        self.seen_modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        return [{"value": x["x"] * self.weight} for x in batch]


class _SumEvaluator(DatasetEvaluator):
    def __init__(self, task="sum"):
        self.task = task
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.total = 0.0
        self.count = 0

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self.total += float(out["value"])
            self.count += 1

    def evaluate(self):
        return {self.task: {"total": self.total, "count": self.count}}


def test_runs_every_batch_in_eval_mode_without_grad_and_restores_mode(caplog):
    model = _Doubler().train()
    loader = [[{"x": torch.tensor(float(i))}, {"x": torch.tensor(1.0)}] for i in range(12)]
    evaluator = _SumEvaluator()
    with caplog.at_level(logging.INFO):
        results = inference_on_dataset(model, loader, evaluator)
    assert results == {"sum": {"total": 2.0 * (sum(range(12)) + 12), "count": 24}}
    assert evaluator.resets == 1
    assert model.seen_modes == [False] * 12 and not any(model.grad_enabled)
    assert model.training  # restored
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Start inference on 12 batches"
    # progress lines start once 2 * warm-up (5) batches are done; the first one is logged
    progress = [m for m in messages if m.startswith("Inference done")]
    assert progress and re.fullmatch(
        r"Inference done 11/12\. Dataloading: \d+\.\d{4} s/iter\. Inference: \d+\.\d{4} s/iter\. "
        r"Eval: \d+\.\d{4} s/iter\. Total: \d+\.\d{4} s/iter\. ETA=\d+:\d\d:\d\d",
        progress[0],
    )
    assert any(m.startswith("Total inference time:") and "on 1 devices" in m for m in messages)
    assert any(m.startswith("Total inference pure compute time:") for m in messages)


def test_plain_callable_list_of_evaluators_and_none():
    loader = [[{"x": torch.tensor(3.0)}]]

    def model(batch):
        return [{"value": b["x"]} for b in batch]

    results = inference_on_dataset(model, loader, [_SumEvaluator("a"), _SumEvaluator("b")])
    assert results == {"a": {"total": 3.0, "count": 1}, "b": {"total": 3.0, "count": 1}}
    assert inference_on_dataset(model, loader, None) == {}


def test_model_mode_is_restored_after_an_error():
    class Failing(nn.Module):
        def forward(self, batch):
            raise RuntimeError("boom")

    model = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, [[{}]], None)
    assert model.training


def test_dataset_evaluators_reject_duplicate_task_names():
    combined = DatasetEvaluators([_SumEvaluator("same"), _SumEvaluator("same")])
    combined.reset()
    with pytest.raises(KeyError, match="same"):
        combined.evaluate()
