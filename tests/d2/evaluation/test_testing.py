"""print_csv_format output, verify_results pass/fail, flatten_results_dict."""

import logging
from collections import OrderedDict

import pytest

from sephnet.d2.config import get_cfg
from sephnet.d2.evaluation.testing import flatten_results_dict, print_csv_format, verify_results


def test_print_csv_format_lines(caplog):
    results = OrderedDict(
        bbox=OrderedDict(AP=40.21705, AP50=61.0, **{"AP-person": 55.0}),
        note=3,
    )
    with caplog.at_level(logging.INFO, logger="sephnet.d2.evaluation.testing"):
        print_csv_format(results)
    assert [r.getMessage() for r in caplog.records] == [
        "copypaste: Task: bbox",
        "copypaste: AP,AP50",
        "copypaste: 40.2171,61.0000",
        "copypaste: note=3",
    ]
    with pytest.raises(TypeError):
        print_csv_format([("bbox", {})])


def test_verify_results_pass_and_fail():
    cfg = get_cfg()
    results = {"bbox": {"AP": 40.0, "AP50": float("nan")}}
    assert verify_results(cfg, results)  # nothing expected
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 40.5, 1.0]]
    assert verify_results(cfg, results)
    for expectation in (
        ["bbox", "AP", 45.0, 1.0],  # outside tolerance
        ["bbox", "AP50", 0.0, 100.0],  # not finite
        ["bbox", "APl", 0.0, 100.0],  # missing metric
    ):
        cfg.TEST.EXPECTED_RESULTS = [expectation]
        with pytest.raises(SystemExit):
            verify_results(cfg, results)


def test_flatten_results_dict():
    nested = {"bbox": {"AP": 1.0, "per": {"cat": 2.0}}, "x": 3}
    assert flatten_results_dict(nested) == {"bbox/AP": 1.0, "bbox/per/cat": 2.0, "x": 3}
