"""benchmark: every task runs on a tiny registered dataset and reports sane figures."""
import pytest

from sephnet.tools.benchmark import benchmark, main, time_iterations
from sephnet.tools.config_loading import load_config

QUICKSTART = "configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"


@pytest.mark.parametrize("task, images_per_iter", [("train", 2), ("eval", 1), ("data", 2)])
def test_each_task_times_iterations_and_reports_memory(tiny_coco, task, images_per_iter):
    result = benchmark(load_config(QUICKSTART, tiny_coco), task, num_iter=2, warmup=1)
    assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["images_per_s"] == pytest.approx(images_per_iter / result["median_s"])
    assert result["peak_rss_mib"] > 50  # torch alone takes more


def test_eval_times_the_fast_path_when_its_key_is_set(tiny_coco, monkeypatch):
    from sephnet.tools import benchmark as tool
    enabled = []
    real = tool.fast_inference_model
    monkeypatch.setattr(tool, "fast_inference_model", lambda cfg, model: enabled.append(
        cfg.MODEL.SEPH.FAST_INFERENCE.ENABLED) or real(cfg, model))
    opts = [*tiny_coco, "MODEL.SEPH.FAST_INFERENCE.ENABLED", "True"]
    assert benchmark(load_config(QUICKSTART, opts), "eval", num_iter=1, warmup=0)["median_s"] > 0
    assert enabled == [True]


def test_time_iterations_runs_warmup_untimed_and_rates_at_the_median():
    calls = []

    def step():
        calls.append(1)
        return 4

    result = time_iterations(step, num_iter=3, warmup=2)
    assert len(calls) == 5
    assert result["images_per_s"] == pytest.approx(4 / result["median_s"])
    with pytest.raises(ValueError, match="--num-iter must be >= 1"):
        time_iterations(step, num_iter=0, warmup=0)


def test_cli_prints_machine_timing_and_memory(tiny_coco, capsys):
    assert main(["--config-file", QUICKSTART, "--task", "data", "--num-iter", "2",
                 "--opts", *tiny_coco]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = lines[[i for i, line in enumerate(lines) if line.startswith("machine: ")][0]:]
    assert "torch" in report[0]
    assert report[1].startswith("data: ") and "images/s" in report[1]
    assert report[2].startswith("memory: peak RSS ")
